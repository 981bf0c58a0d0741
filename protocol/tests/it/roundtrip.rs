//! Every message kind survives encode → decode unchanged, and centrally
//! signed encoding is deterministic (the same message gives the same bytes;
//! device signatures are ECDSA, randomized, so only the body is compared).

use facegate_protocol::{
    DeltaBatch, DeviceStatus, DownMessage, TrustedKeys, UpMessage, decode_unverified, decode_verified, encode_signed,
};
use proptest::prelude::*;

use crate::strategies::{
    central_key, decode_up, delta_batch, device_status, down_message, encode_up as encode, up_message,
};

fn keys() -> TrustedKeys {
    TrustedKeys::new([central_key().public_key()])
}

proptest! {
    #[test]
    fn delta_batches_round_trip(batch in delta_batch()) {
        let bytes = encode_signed(&batch, &central_key()).unwrap();
        prop_assert_eq!(decode_verified::<DeltaBatch>(&bytes, &keys()).unwrap(), batch.clone());
        prop_assert_eq!(encode_signed(&batch, &central_key()).unwrap(), bytes);
    }

    #[test]
    fn down_messages_round_trip(message in down_message()) {
        let bytes = encode_signed(&message, &central_key()).unwrap();
        prop_assert_eq!(decode_verified::<DownMessage>(&bytes, &keys()).unwrap(), message.clone());
        prop_assert_eq!(encode_signed(&message, &central_key()).unwrap(), bytes);
    }

    #[test]
    fn up_messages_round_trip(message in up_message()) {
        let bytes = encode(&message).unwrap();
        prop_assert_eq!(decode_up::<UpMessage>(&bytes).unwrap(), message.clone());
    }

    #[test]
    fn device_statuses_round_trip(status in device_status()) {
        let bytes = encode(&status).unwrap();
        prop_assert_eq!(decode_up::<DeviceStatus>(&bytes).unwrap(), status.clone());
    }

    #[test]
    fn a_message_of_one_kind_never_decodes_as_another(batch in delta_batch(), up in up_message()) {
        let delta = encode_signed(&batch, &central_key()).unwrap();
        let up = encode(&up).unwrap();
        prop_assert!(decode_verified::<DownMessage>(&delta, &keys()).is_err());
        prop_assert!(decode_unverified::<UpMessage>(&delta).is_err());
        prop_assert!(decode_up::<UpMessage>(&delta).is_err());
        prop_assert!(decode_up::<DeviceStatus>(&up).is_err());
        prop_assert!(decode_verified::<DeltaBatch>(&up, &keys()).is_err());
    }
}
