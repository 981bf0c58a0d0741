//! Encryption at rest of enrollment photos (AES-256-GCM, `ring`) and random
//! identifiers.
//!
//! The key lives in a file outside the database, so a database dump alone
//! does not reveal a face. Each photo is sealed with a fresh random nonce and
//! its photo and identity ids as associated data: a ciphertext moved to
//! another record does not open.

use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Key length (AES-256).
pub const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("cannot read the photo key {path}: {source}")]
    ReadKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the photo key {path} must hold 32 raw bytes or 64 hex characters")]
    KeyFormat { path: String },
    #[error("the system random number generator failed")]
    Random,
    #[error("a stored photo does not decrypt (wrong key, or the record was tampered with)")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| CryptoError::Random)?;
    Ok(out)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lower- or upper-case hex; `None` when it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A new random identifier: `prefix` and 20 hex characters (80 bits).
pub fn new_id(prefix: &str) -> Result<String, CryptoError> {
    Ok(format!("{prefix}{}", hex(&random_bytes::<10>()?)))
}

/// A sealed photo: nonce and ciphertext with its tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// Seals and opens photos with one key.
pub struct PhotoCipher {
    key: LessSafeKey,
}

impl std::fmt::Debug for PhotoCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PhotoCipher(..)")
    }
}

impl PhotoCipher {
    pub fn new(key: &[u8; KEY_BYTES]) -> Result<Self, CryptoError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| CryptoError::Seal)?;
        Ok(Self { key: LessSafeKey::new(unbound) })
    }

    /// Reads a key file: 32 raw bytes, or 64 hex characters (whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, CryptoError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| CryptoError::ReadKey { path: shown.clone(), source })?;
        let key: Vec<u8> = if bytes.len() == KEY_BYTES {
            bytes
        } else {
            let text: String = String::from_utf8_lossy(&bytes).split_whitespace().collect();
            unhex(&text).ok_or(CryptoError::KeyFormat { path: shown.clone() })?
        };
        let key: [u8; KEY_BYTES] = key.try_into().map_err(|_| CryptoError::KeyFormat { path: shown })?;
        Self::new(&key)
    }

    /// A cipher with a fresh random key (demo mode: photos die with the process).
    pub fn ephemeral() -> Result<Self, CryptoError> {
        Self::new(&random_bytes::<KEY_BYTES>()?)
    }

    pub fn seal(&self, plaintext: &[u8], associated: &str) -> Result<Sealed, CryptoError> {
        let nonce = random_bytes::<NONCE_LEN>()?;
        let mut buffer = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated.as_bytes()),
                &mut buffer,
            )
            .map_err(|_| CryptoError::Seal)?;
        Ok(Sealed { nonce, ciphertext: buffer })
    }

    pub fn open(&self, sealed: &Sealed, associated: &str) -> Result<Vec<u8>, CryptoError> {
        let mut buffer = sealed.ciphertext.clone();
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(sealed.nonce), Aad::from(associated.as_bytes()), &mut buffer)
            .map_err(|_| CryptoError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_round_trip_and_refuse_another_record() {
        let cipher = PhotoCipher::ephemeral().unwrap();
        let sealed = cipher.seal(b"jpeg bytes", "photo-1/id-1").unwrap();
        assert_ne!(sealed.ciphertext[..10], b"jpeg bytes"[..]);
        assert_eq!(cipher.open(&sealed, "photo-1/id-1").unwrap(), b"jpeg bytes");
        assert!(matches!(cipher.open(&sealed, "photo-2/id-1"), Err(CryptoError::Open)));
        let other = PhotoCipher::ephemeral().unwrap();
        assert!(matches!(other.open(&sealed, "photo-1/id-1"), Err(CryptoError::Open)));
    }

    #[test]
    fn key_files_are_raw_or_hex() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [7u8; 32]).unwrap();
        let hexed = dir.path().join("hex");
        std::fs::write(&hexed, format!("{}\n", hex(&[7u8; 32]))).unwrap();
        let a = PhotoCipher::from_file(&raw).unwrap();
        let b = PhotoCipher::from_file(&hexed).unwrap();
        let sealed = a.seal(b"x", "ad").unwrap();
        assert_eq!(b.open(&sealed, "ad").unwrap(), b"x");
        let short = dir.path().join("short");
        std::fs::write(&short, "abcd").unwrap();
        assert!(matches!(PhotoCipher::from_file(&short), Err(CryptoError::KeyFormat { .. })));
    }

    #[test]
    fn ids_are_safe_identifiers() {
        let id = new_id("p-").unwrap();
        assert_eq!(id.len(), 22);
        assert!(facegate_protocol::IdentityId::new(id).is_ok());
    }
}
