//! Key rotation across the key file and the database, safe to interrupt and
//! to repeat.
//!
//! A rotation writes the fresh key to `{key}.new`, re-encrypts the database
//! under it (one transaction, flushed), then renames `{key}.new` over the key
//! file. Until that rename both files exist and the database is under one of
//! the two keys: [`open_with_key_file`] finds out which on the next start,
//! and [`rotate_key_file`] settles such a leftover before rotating again, so
//! the only key that opens the database is never deleted.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use super::{DeviceKey, LiveShard, Store, StoreConfig, StoreError};

/// Where a rotation keeps the fresh key until the database uses it:
/// `device.key` → `device.key.new`.
pub fn pending_key_path(key_path: &Path) -> PathBuf {
    let mut name = key_path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".new");
    key_path.with_file_name(name)
}

/// Rotates the device key of `store` whose key file is `key_path`: settles
/// a rotation interrupted earlier, writes a fresh key beside the old one,
/// re-encrypts the database under it and renames it over the key file.
/// Repeating it after any failure is safe; a failure leaves a database
/// that [`open_with_key_file`] opens.
pub fn rotate_key_file(store: &Store, key_path: &Path) -> Result<(), StoreError> {
    settle_pending_key(store, key_path)?;
    let pending = pending_key_path(key_path);
    let key = DeviceKey::generate(&pending)?;
    store.rotate_key(key)?;
    promote(&pending, key_path)
}

/// A leftover `{key}.new` while the store runs: the database already uses
/// it (the last rotation committed but its rename failed) — then make that
/// durable and promote it — or it never did, and it is removed.
fn settle_pending_key(store: &Store, key_path: &Path) -> Result<(), StoreError> {
    let pending = pending_key_path(key_path);
    if !pending.exists() {
        return Ok(());
    }
    let key = DeviceKey::load(&pending)?;
    if store.is_current_key(&key)? {
        store.flush()?;
        log::info!(key:% = key_path.display(); "finishing an interrupted key rotation");
        promote(&pending, key_path)
    } else {
        remove(&pending)
    }
}

/// Opens the shard under the key file at `key_path` (created with the
/// database when both are new), finishing a rotation that a crash
/// interrupted: with a `{key}.new` beside it, the database is under the old
/// key (the rotation never committed: the new file is removed) or under the
/// new one (it did: the new file replaces the old).
pub fn open_with_key_file(config: &StoreConfig, key_path: &Path) -> Result<LiveShard, StoreError> {
    let pending = pending_key_path(key_path);
    let (key, _created) = DeviceKey::load_or_generate(key_path)?;
    if !pending.exists() {
        return LiveShard::open(config, key);
    }
    match LiveShard::open(config, key) {
        Ok(shard) => {
            log::warn!(key:% = pending.display(); "a key rotation was interrupted before the database used the new key; the new key is discarded");
            remove(&pending)?;
            Ok(shard)
        }
        Err(StoreError::WrongKey { .. }) => {
            let shard = LiveShard::open(config, DeviceKey::load(&pending)?)?;
            log::warn!(key:% = key_path.display(); "a key rotation was interrupted after the database used the new key; the new key replaces the old");
            promote(&pending, key_path)?;
            Ok(shard)
        }
        Err(error) => Err(error),
    }
}

/// Renames `pending` over `key_path` and makes the rename durable.
fn promote(pending: &Path, key_path: &Path) -> Result<(), StoreError> {
    let create = |source| StoreError::KeyCreate { path: key_path.to_path_buf(), source };
    fs::rename(pending, key_path).map_err(create)?;
    sync_parent(key_path).map_err(create)
}

fn remove(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => sync_parent(path).map_err(|source| StoreError::KeyCreate { path: path.to_path_buf(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::KeyCreate { path: path.to_path_buf(), source }),
    }
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir).and_then(|d| d.sync_all()),
        None => Ok(()),
    }
}
