//! The gallery on a real full disk: a small tmpfs mounted for the test (as
//! root; elsewhere each test says so and passes without checking anything).
//! A read-only remount is refused while sled holds its files open for
//! writing, so the read-only case is covered by the flush-failure seam only. A wipe (an empty snapshot of a synced shard) or a key
//! rotation that the disk refuses never leaves the matcher holding someone
//! sled no longer holds, and never loses the key that opens the database;
//! once the disk is usable again the database reopens before or after the
//! change. The deterministic version of these faults (`Store::fail_next_flushes`)
//! runs everywhere, in `src/sync/shell_tests.rs`.
#![allow(clippy::unwrap_used)]

mod store_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use facegate_daemon::store::{
    GalleryStore, LiveShard, StoreConfig, open_with_key_file, pending_key_path, rotate_key_file,
};
use facegate_protocol::SnapshotEntry;
use store_support::*;

/// A tmpfs of `size` mounted in a temporary directory, unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Some(Self { _dir: dir, mount }),
            _ => {
                eprintln!("cannot mount a tmpfs here (not root?): the real-disk fault is not exercised");
                None
            }
        }
    }

    /// Fills the file system: writes until ENOSPC.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0xa5u8; 4096];
        loop {
            match file.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn north() -> facegate_protocol::ShardId {
    store_support::shard("north")
}

fn seeded(db: &Path, key_path: &Path) -> LiveShard {
    let shard = open_with_key_file(&StoreConfig::new(db, model()), key_path).unwrap();
    let entries: Vec<SnapshotEntry> = (0..20)
        .map(|i| SnapshotEntry { identity: record(&format!("p{i:02}"), 1), templates: vec![template(i)] })
        .collect();
    shard.apply_snapshot(&north(), 5, &entries).unwrap();
    shard
}

fn matcher_ids(shard: &LiveShard) -> BTreeSet<String> {
    shard.read().identities.keys().map(ToString::to_string).collect()
}

/// After a failed change the matcher shows what sled holds, or nobody when
/// sled cannot be read.
fn assert_matcher_follows_sled(shard: &LiveShard, when: &str) {
    let matcher = matcher_ids(shard);
    match shard.entries() {
        Ok(entries) => {
            let stored: BTreeSet<String> = entries.iter().map(|e| e.record.id.to_string()).collect();
            assert_eq!(matcher, stored, "{when}: the matcher differs from sled");
        }
        Err(error) => {
            assert!(matcher.is_empty(), "{when}: sled is unreadable ({error}) but the matcher holds {matcher:?}")
        }
    }
}

fn reopened_count(db: &Path, key_path: &Path) -> usize {
    let shard = open_with_key_file(&StoreConfig::new(db, model()), key_path).unwrap();
    let count = shard.entries().unwrap().len();
    assert_eq!(matcher_ids(&shard).len(), count);
    count
}

#[test]
fn a_wipe_on_a_full_disk_leaves_the_matcher_no_one_sled_removed_and_reopens_before_or_after() {
    let Some(disk) = Tmpfs::mount("8m") else { return };
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("device.key");
    let db = disk.mount.join("db");
    let shard = seeded(&db, &key_path);
    let filler = disk.fill();
    let result = shard.apply_snapshot(&north(), 6, &[]);
    eprintln!("wipe on a full disk: {result:?}");
    if result.is_err() {
        assert_matcher_follows_sled(&shard, "full disk");
    } else {
        assert!(matcher_ids(&shard).is_empty());
    }
    drop(shard);
    std::fs::remove_file(filler).unwrap();
    let count = reopened_count(&db, &key_path);
    assert!(count == 0 || count == 20, "a half-applied wipe: {count}");
}

#[test]
fn a_key_rotation_on_a_full_disk_keeps_a_key_file_that_opens_the_database() {
    let Some(disk) = Tmpfs::mount("8m") else { return };
    // The key beside the database (the default layout): both on the full disk.
    let db = disk.mount.join("db");
    std::fs::create_dir_all(&db).unwrap();
    let key_path = db.join("device.key");
    let shard = seeded(&db, &key_path);
    let before = shard.entries().unwrap();
    let filler = disk.fill();
    let result = rotate_key_file(shard.store(), &key_path);
    eprintln!("rotation on a full disk: {result:?}");
    drop(shard);
    std::fs::remove_file(filler).unwrap();
    let shard = open_with_key_file(&StoreConfig::new(&db, model()), &key_path).unwrap();
    assert_eq!(shard.entries().unwrap(), before);
    assert!(!pending_key_path(&key_path).exists());
}

#[test]
fn a_key_rotation_whose_database_write_fails_keeps_both_keys_until_the_next_start_settles_them() {
    let Some(disk) = Tmpfs::mount("8m") else { return };
    // The key on a healthy disk, the database on the full one: the new key
    // is written, the re-encrypted database is not (or not surely).
    let keys = tempfile::tempdir().unwrap();
    let key_path = keys.path().join("device.key");
    let db = disk.mount.join("db");
    let shard = seeded(&db, &key_path);
    let before = shard.entries().unwrap();
    let filler = disk.fill();
    let result = rotate_key_file(shard.store(), &key_path);
    eprintln!("rotation with the database on a full disk: {result:?}");
    if result.is_err() {
        assert!(pending_key_path(&key_path).exists(), "the new key was deleted although sled may use it");
    }
    drop(shard);
    std::fs::remove_file(filler).unwrap();
    let shard = open_with_key_file(&StoreConfig::new(&db, model()), &key_path).unwrap();
    assert_eq!(shard.entries().unwrap(), before);
    assert!(!pending_key_path(&key_path).exists());
}
