//! The device key: 32 random bytes in a file of its own (mode 0400), used
//! for AES-256-GCM of the templates at rest.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::StoreError;

/// Length of a device key in bytes.
pub(crate) const KEY_LEN: usize = 32;
/// First byte of every sealed value: the format (AES-256-GCM, 96-bit random nonce).
const SEALED_FORMAT: u8 = 1;

/// An AES-256-GCM key loaded from (or written to) its key file. Its bytes are
/// never printed.
pub struct DeviceKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

impl DeviceKey {
    /// Creates a fresh random key and writes it to `path` with mode 0400
    /// (through a temporary file and a rename, so a power cut leaves either
    /// no key file or a whole one). Refuses to overwrite an existing file.
    pub fn generate(path: &Path) -> Result<Self, StoreError> {
        if path.exists() {
            return Err(StoreError::KeyExists { path: path.to_path_buf() });
        }
        let random = SystemRandom::new();
        let mut bytes = [0u8; KEY_LEN];
        random.fill(&mut bytes).map_err(|_| StoreError::Random)?;
        let create = |source| StoreError::KeyCreate { path: path.to_path_buf(), source };
        let temporary = temporary_path(path);
        match fs::remove_file(&temporary) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(create(e)),
        }
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o400).open(&temporary).map_err(create)?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(create)?;
        fs::rename(&temporary, path).map_err(create)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(create)?;
        }
        Self::from_bytes(&bytes)
    }

    /// Reads the key file at `path`. Refuses a file that group or others may
    /// read or write (the fix is `chmod 0400`), and one of the wrong size.
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let read = |source| StoreError::KeyRead { path: path.to_path_buf(), source };
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::KeyMissing { path: path.to_path_buf() });
            }
            Err(e) => return Err(read(e)),
        };
        let metadata = file.metadata().map_err(read)?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(StoreError::KeyPermissions { path: path.to_path_buf(), mode });
        }
        if metadata.len() != KEY_LEN as u64 {
            return Err(StoreError::KeyLength { path: path.to_path_buf(), len: metadata.len() });
        }
        let mut bytes = [0u8; KEY_LEN];
        file.read_exact(&mut bytes).map_err(read)?;
        Self::from_bytes(&bytes)
    }

    /// [`load`](Self::load) when `path` exists, else [`generate`](Self::generate).
    /// Returns whether the key was created.
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), StoreError> {
        match Self::load(path) {
            Err(StoreError::KeyMissing { .. }) => Self::generate(path).map(|key| (key, true)),
            other => other.map(|key| (key, false)),
        }
    }

    fn from_bytes(bytes: &[u8; KEY_LEN]) -> Result<Self, StoreError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| StoreError::Random)?;
        Ok(Self { key: LessSafeKey::new(key), random: SystemRandom::new() })
    }

    /// `format || nonce || ciphertext || tag`, with a fresh random nonce.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| StoreError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut in_out)
            .map_err(|_| StoreError::Random)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(SEALED_FORMAT);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// The plaintext of a [`seal`](Self::seal)ed value; `None` when it was
    /// sealed under another key or AAD, or was altered.
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (&format, rest) = sealed.split_first()?;
        if format != SEALED_FORMAT || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self.key.open_in_place(nonce, Aad::from(aad), &mut in_out).ok()?;
        Some(plaintext.to_vec())
    }
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_generated_key_file_has_mode_0400_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.key");
        let key = DeviceKey::generate(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o400);
        let sealed = key.seal(b"aad", b"secret").unwrap();
        let loaded = DeviceKey::load(&path).unwrap();
        assert_eq!(loaded.open(b"aad", &sealed).unwrap(), b"secret");
        assert!(matches!(DeviceKey::generate(&path), Err(StoreError::KeyExists { .. })));
    }

    #[test]
    fn a_sealed_value_does_not_open_under_another_aad_or_when_altered() {
        let dir = tempfile::tempdir().unwrap();
        let key = DeviceKey::generate(&dir.path().join("k")).unwrap();
        let mut sealed = key.seal(b"alice", b"template").unwrap();
        assert!(key.open(b"bob", &sealed).is_none());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(key.open(b"alice", &sealed).is_none());
        assert!(key.open(b"alice", &[]).is_none());
    }

    #[test]
    fn two_seals_of_the_same_value_differ_by_their_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let key = DeviceKey::generate(&dir.path().join("k")).unwrap();
        assert_ne!(key.seal(b"a", b"same").unwrap(), key.seal(b"a", b"same").unwrap());
    }

    #[test]
    fn a_key_file_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.key");
        fs::write(&path, [0u8; 16]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        let err = DeviceKey::load(&path).unwrap_err();
        assert!(matches!(err, StoreError::KeyLength { len: 16, .. }), "{err}");
    }

    #[test]
    fn a_missing_key_file_is_generated_by_load_or_generate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.key");
        assert!(matches!(DeviceKey::load(&path), Err(StoreError::KeyMissing { .. })));
        assert!(DeviceKey::load_or_generate(&path).unwrap().1);
        assert!(!DeviceKey::load_or_generate(&path).unwrap().1);
    }
}
