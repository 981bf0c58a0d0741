//! Keys (`ring`): the central Ed25519 signing key and the public keys a
//! device pins at provisioning; the device's ECDSA P-256 key (the key of its
//! client certificate), which signs its uplinks, and its public half the
//! server verifies them with.

use std::collections::HashMap;
use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// Length of an Ed25519 signature, in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Longest ECDSA P-256 signature (ASN.1 DER), in bytes.
pub const DEVICE_SIGNATURE_MAX_LEN: usize = 72;
/// Length of an uncompressed P-256 public point, in bytes.
pub const DEVICE_PUBLIC_KEY_LEN: usize = 65;

/// First 8 bytes of SHA-256 of a public key: names the key in an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn of(public_key: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.as_ref()[..8]);
        Self(id)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 8]>::try_from(bytes).ok().map(Self)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::codec::hex(&self.0))
    }
}

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an Ed25519 PKCS#8 private key")]
    BadPrivateKey,
    #[error("an Ed25519 public key is 32 bytes, got {0}")]
    BadPublicKey(usize),
    #[error("the system random generator failed")]
    Random,
    #[error("not an ECDSA P-256 PKCS#8 private key")]
    BadDeviceKey,
    #[error("a P-256 public key is a {DEVICE_PUBLIC_KEY_LEN}-byte uncompressed point, got {0} bytes")]
    BadDevicePublicKey(usize),
    #[error("signing failed")]
    Sign,
}

/// The central signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    id: KeyId,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key, as PKCS#8 bytes to be stored by the caller.
    pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        Ed25519KeyPair::generate_pkcs8(&rng).map(|d| d.as_ref().to_vec()).map_err(|_| KeyError::Random)
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| KeyError::BadPrivateKey)?;
        let id = KeyId::of(pair.public_key().as_ref());
        Ok(Self { pair, id })
    }

    /// The key whose 32-byte Ed25519 seed is `seed`: for tests and golden
    /// vectors (Ed25519 signatures are deterministic). Keys in production
    /// come from [`SigningKey::generate_pkcs8`].
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| KeyError::BadPrivateKey)?;
        let id = KeyId::of(pair.public_key().as_ref());
        Ok(Self { pair, id })
    }

    pub fn key_id(&self) -> KeyId {
        self.id
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey { bytes: self.pair.public_key().as_ref().to_vec(), id: self.id }
    }

    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.pair.sign(data).as_ref().to_vec()
    }
}

/// An Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: Vec<u8>,
    id: KeyId,
}

impl PublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != 32 {
            return Err(KeyError::BadPublicKey(bytes.len()));
        }
        Ok(Self { bytes: bytes.to_vec(), id: KeyId::of(bytes) })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn key_id(&self) -> KeyId {
        self.id
    }

    pub fn verify(&self, data: &[u8], signature_bytes: &[u8]) -> Result<(), ring::error::Unspecified> {
        UnparsedPublicKey::new(&signature::ED25519, &self.bytes).verify(data, signature_bytes)
    }
}

/// The public keys a device trusts (one, or two while a key is rotated).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: HashMap<KeyId, PublicKey>,
}

impl TrustedKeys {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self { keys: keys.into_iter().map(|k| (k.key_id(), k)).collect() }
    }

    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys, in key-id order.
    pub fn keys(&self) -> Vec<&PublicKey> {
        let mut keys: Vec<&PublicKey> = self.keys.values().collect();
        keys.sort_by_key(|k| k.key_id().0);
        keys
    }
}

/// A device's uplink signing key: ECDSA P-256 with SHA-256, the private key
/// of its client certificate (generated on the device at provisioning).
pub struct DeviceSigningKey {
    pair: EcdsaKeyPair,
    id: KeyId,
    rng: SystemRandom,
}

impl fmt::Debug for DeviceSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSigningKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl DeviceSigningKey {
    /// A fresh key as PKCS#8 bytes (tests; devices make theirs with the CSR).
    pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| KeyError::Random)
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, &rng)
            .map_err(|_| KeyError::BadDeviceKey)?;
        let id = KeyId::of(pair.public_key().as_ref());
        Ok(Self { pair, id, rng })
    }

    pub fn key_id(&self) -> KeyId {
        self.id
    }

    pub fn public_key(&self) -> DevicePublicKey {
        DevicePublicKey { point: self.pair.public_key().as_ref().to_vec(), id: self.id }
    }

    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.pair.sign(&self.rng, data).map(|s| s.as_ref().to_vec()).map_err(|_| KeyError::Sign)
    }
}

/// The public half of a [`DeviceSigningKey`], as the server reads it from
/// the device's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePublicKey {
    point: Vec<u8>,
    id: KeyId,
}

impl DevicePublicKey {
    /// From the uncompressed point (`04 || x || y`), the subject public key
    /// of a P-256 certificate.
    pub fn from_point(point: &[u8]) -> Result<Self, KeyError> {
        if point.len() != DEVICE_PUBLIC_KEY_LEN || point[0] != 4 {
            return Err(KeyError::BadDevicePublicKey(point.len()));
        }
        Ok(Self { point: point.to_vec(), id: KeyId::of(point) })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.point
    }

    pub fn key_id(&self) -> KeyId {
        self.id
    }

    pub fn verify(&self, data: &[u8], signature_bytes: &[u8]) -> Result<(), ring::error::Unspecified> {
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.point).verify(data, signature_bytes)
    }
}
