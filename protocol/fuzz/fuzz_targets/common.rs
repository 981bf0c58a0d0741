//! Shared by the fuzz targets: the pinned key and the "decode, then
//! re-encode to the same message" check.
#![allow(dead_code, clippy::unwrap_used)]

use facegate_protocol::{
    DeltaBatch, DeviceStatus, DownMessage, Kind, SigningKey, TrustedKeys, UpMessage, decode, decode_verified, encode,
    encode_signed,
};

pub fn key() -> SigningKey {
    SigningKey::from_seed(&[42; 32]).unwrap()
}

pub fn keys() -> TrustedKeys {
    TrustedKeys::new([key().public_key()])
}

/// Decodes `bytes` as `kind`; anything accepted must re-encode to itself.
pub fn check(kind: Kind, bytes: &[u8], keys: &TrustedKeys, key: &SigningKey) {
    match kind {
        Kind::Delta => {
            if let Ok(m) = decode_verified::<DeltaBatch>(bytes, keys) {
                assert_eq!(decode_verified::<DeltaBatch>(&encode_signed(&m, key).unwrap(), keys).unwrap(), m);
            }
        }
        Kind::Down => {
            if let Ok(m) = decode_verified::<DownMessage>(bytes, keys) {
                assert_eq!(decode_verified::<DownMessage>(&encode_signed(&m, key).unwrap(), keys).unwrap(), m);
            }
        }
        Kind::Up => {
            if let Ok(m) = decode::<UpMessage>(bytes) {
                assert_eq!(decode::<UpMessage>(&encode(&m).unwrap()).unwrap(), m);
            }
        }
        Kind::Status => {
            if let Ok(m) = decode::<DeviceStatus>(bytes) {
                assert_eq!(decode::<DeviceStatus>(&encode(&m).unwrap()).unwrap(), m);
            }
        }
    }
}
