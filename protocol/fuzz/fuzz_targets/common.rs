//! Shared by the fuzz targets: the pinned key and the "decode, then
//! re-encode to the same message" check.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::LazyLock;

use facegate_protocol::{
    DeltaBatch, DeviceSigningKey, DeviceStatus, DownMessage, Kind, SealKey, Signer, SigningKey, TrustedKeys, UpMessage,
    decode_device_verified, decode_verified, encode_device_signed, encode_signed,
};

pub fn key() -> SigningKey {
    SigningKey::from_seed(&[42; 32]).unwrap()
}

/// The device key of the fuzzing process (ECDSA keys are generated).
pub static DEVICE: LazyLock<DeviceSigningKey> = LazyLock::new(|| {
    DeviceSigningKey::from_pkcs8(&DeviceSigningKey::generate_pkcs8().unwrap()).unwrap()
});

/// The key that signs `kind`.
pub fn seal_key<'a>(kind: Kind, central: &'a SigningKey) -> Option<SealKey<'a>> {
    Some(match kind.signer() {
        Signer::Central => SealKey::Central(central),
        Signer::Device => SealKey::Device(&DEVICE),
    })
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
            let public = DEVICE.public_key();
            if let Ok(m) = decode_device_verified::<UpMessage>(bytes, &public) {
                let again = encode_device_signed(&m, &DEVICE).unwrap();
                assert_eq!(decode_device_verified::<UpMessage>(&again, &public).unwrap(), m);
            }
        }
        Kind::Status => {
            let public = DEVICE.public_key();
            if let Ok(m) = decode_device_verified::<DeviceStatus>(bytes, &public) {
                let again = encode_device_signed(&m, &DEVICE).unwrap();
                assert_eq!(decode_device_verified::<DeviceStatus>(&again, &public).unwrap(), m);
            }
        }
    }
}
