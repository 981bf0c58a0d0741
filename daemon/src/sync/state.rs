//! What the sync shell keeps in the sync directory beside the provisioning
//! files, each written atomically (temporary file, fsync, rename, fsync of
//! the directory) and refused with a clear error when it does not parse:
//!
//! | file | holds | written on |
//! | --- | --- | --- |
//! | `sync-state` | the log epoch and the assignment (version, shards), JSON | [`DeviceAction::Persist`] |
//! | `trusted-keys` | the central keys trusted since a rollover, JSON | [`DeviceAction::TrustKeys`] |
//! | `last-command` | the id of the last command executed | [`DeviceAction::Execute`], after the command ran |
//! | `wiped` | the server wiped this device: sync stays off | `wipe`, after the gallery is emptied |
//!
//! Without `sync-state` the device serves the shards of `provisioned.json`
//! (assignment version as provisioned, epoch unknown); without
//! `trusted-keys`, the keys pinned at provisioning.
//!
//! [`DeviceAction::Persist`]: facegate_protocol::sync::device::DeviceAction::Persist
//! [`DeviceAction::TrustKeys`]: facegate_protocol::sync::device::DeviceAction::TrustKeys
//! [`DeviceAction::Execute`]: facegate_protocol::sync::device::DeviceAction::Execute

use std::io::Write;
use std::path::Path;

use facegate_protocol::sync::device::Persisted;
use facegate_protocol::{Assignment, DeviceSigningKey, PublicKey, TrustedKeys};
use serde::{Deserialize, Serialize};

use super::SyncError;
use super::provision::{DEVICE_KEY, SigningKeyInfo, hex_decode};

pub const SYNC_STATE: &str = "sync-state";
pub const TRUSTED_KEYS: &str = "trusted-keys";
pub const LAST_COMMAND: &str = "last-command";
pub const WIPED: &str = "wiped";

/// The content of `sync-state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncState {
    /// The log epoch the store's seqs belong to (0: not known yet).
    pub epoch: u64,
    pub assignment: Assignment,
}

impl From<Persisted> for SyncState {
    fn from(p: Persisted) -> Self {
        Self { epoch: p.epoch, assignment: p.assignment }
    }
}

/// The content of `trusted-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustedKeysFile {
    keys: Vec<SigningKeyInfo>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |source| SyncError::Io { path: path.to_path_buf(), source }
}

/// Replaces `dir/name` by `bytes` so that a power cut leaves the old or the
/// new content, never a mix.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SyncError> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
    file.write_all(bytes).map_err(io(&temporary))?;
    file.sync_all().map_err(io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io(&path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// `dir/name`, or `None` when it does not exist.
fn read_optional(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, SyncError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SyncError::Io { path, source }),
    }
}

fn corrupt(dir: &Path, name: &str, detail: impl std::fmt::Display) -> SyncError {
    SyncError::Corrupt(format!(
        "{}: {detail} (restore it, or delete it to start from provisioned.json and the next freshness proof)",
        dir.join(name).display()
    ))
}

/// The persisted epoch and assignment, if any.
pub fn read_sync_state(dir: &Path) -> Result<Option<SyncState>, SyncError> {
    let Some(bytes) = read_optional(dir, SYNC_STATE)? else { return Ok(None) };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| corrupt(dir, SYNC_STATE, e))
}

pub fn write_sync_state(dir: &Path, state: &SyncState) -> Result<(), SyncError> {
    let json = serde_json::to_vec_pretty(state).map_err(|e| corrupt(dir, SYNC_STATE, e))?;
    write_atomically(dir, SYNC_STATE, &json)
}

/// The central keys trusted since a rollover, if one happened.
pub fn read_trusted_keys(dir: &Path) -> Result<Option<TrustedKeys>, SyncError> {
    let Some(bytes) = read_optional(dir, TRUSTED_KEYS)? else { return Ok(None) };
    let file: TrustedKeysFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(dir, TRUSTED_KEYS, e))?;
    if file.keys.is_empty() {
        return Err(corrupt(dir, TRUSTED_KEYS, "no key"));
    }
    let keys = file
        .keys
        .iter()
        .map(|k| {
            let bytes = hex_decode(&k.public_key_hex).ok_or_else(|| corrupt(dir, TRUSTED_KEYS, "a key is not hex"))?;
            PublicKey::from_bytes(&bytes).map_err(|e| corrupt(dir, TRUSTED_KEYS, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(TrustedKeys::new(keys)))
}

pub fn write_trusted_keys(dir: &Path, keys: &[PublicKey]) -> Result<(), SyncError> {
    let file = TrustedKeysFile {
        keys: keys
            .iter()
            .map(|k| SigningKeyInfo {
                key_id: k.key_id().to_string(),
                public_key_hex: k.as_bytes().iter().map(|b| format!("{b:02x}")).collect(),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| corrupt(dir, TRUSTED_KEYS, e))?;
    write_atomically(dir, TRUSTED_KEYS, &json)
}

/// The id of the last command executed (0: none).
pub fn read_last_command(dir: &Path) -> Result<u64, SyncError> {
    let Some(bytes) = read_optional(dir, LAST_COMMAND)? else { return Ok(0) };
    String::from_utf8_lossy(&bytes).trim().parse().map_err(|_| corrupt(dir, LAST_COMMAND, "not a number"))
}

pub fn write_last_command(dir: &Path, id: u64) -> Result<(), SyncError> {
    write_atomically(dir, LAST_COMMAND, format!("{id}\n").as_bytes())
}

/// The device's uplink signing key: the private key of its client
/// certificate (`device.key`, PKCS#8 PEM, P-256).
pub fn load_signing_key(dir: &Path) -> Result<DeviceSigningKey, SyncError> {
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::pki_types::pem::PemObject;
    let path = dir.join(DEVICE_KEY);
    let pem = std::fs::read(&path).map_err(io(&path))?;
    let bad = |message: String| SyncError::SigningKey { path: path.clone(), message };
    let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|e| bad(format!("not a PKCS#8 PEM key: {e}")))?;
    DeviceSigningKey::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| bad(e.to_string()))
}

/// 32 secret random bytes the freshness nonces are derived from.
pub fn nonce_seed() -> Result<[u8; 32], SyncError> {
    let rng = ring::rand::SystemRandom::new();
    ring::rand::generate(&rng).map(|seed| seed.expose()).map_err(|_| SyncError::Random)
}

#[cfg(test)]
mod tests {
    use facegate_protocol::{ShardId, SigningKey};

    use super::*;

    #[test]
    fn the_sync_state_round_trips_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_sync_state(dir.path()).unwrap(), None);
        let state =
            SyncState { epoch: 7, assignment: Assignment { version: 3, shards: vec![ShardId::new("lobby").unwrap()] } };
        write_sync_state(dir.path(), &state).unwrap();
        assert_eq!(read_sync_state(dir.path()).unwrap(), Some(state));
        assert!(!dir.path().join("sync-state.tmp").exists());
    }

    #[test]
    fn a_corrupt_sync_state_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SYNC_STATE), b"{\"epoch\": 7, \"assign").unwrap();
        let err = read_sync_state(dir.path()).unwrap_err();
        assert!(matches!(err, SyncError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("sync-state"), "{err}");
        std::fs::write(dir.path().join(TRUSTED_KEYS), b"{\"keys\": []}").unwrap();
        assert!(matches!(read_trusted_keys(dir.path()).unwrap_err(), SyncError::Corrupt(_)));
    }

    #[test]
    fn trusted_keys_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_trusted_keys(dir.path()).unwrap().is_none());
        let key = SigningKey::from_seed(&[9; 32]).unwrap().public_key();
        write_trusted_keys(dir.path(), std::slice::from_ref(&key)).unwrap();
        let keys = read_trusted_keys(dir.path()).unwrap().unwrap();
        assert_eq!(keys.keys(), vec![&key]);
    }

    #[test]
    fn the_provisioned_key_signs_uplinks_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (key_pem, _) = super::super::provision::key_and_csr("door-1").unwrap();
        std::fs::write(dir.path().join(DEVICE_KEY), key_pem).unwrap();
        let key = load_signing_key(dir.path()).unwrap();
        assert!(!key.sign(b"uplink").unwrap().is_empty());
        std::fs::write(dir.path().join(DEVICE_KEY), b"not a key").unwrap();
        let err = load_signing_key(dir.path()).unwrap_err();
        assert!(err.to_string().contains("device.key"), "{err}");
    }

    #[test]
    fn last_command_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_last_command(dir.path()).unwrap(), 0);
        write_last_command(dir.path(), 42).unwrap();
        assert_eq!(read_last_command(dir.path()).unwrap(), 42);
    }
}
