//! The gallery store's contract, one behaviour per test: round trips,
//! encryption and keys, corrupt files, delta sequencing, shard membership,
//! model filtering, the audit outbox and the live gallery.
#![allow(clippy::unwrap_used)]

mod store_support;

use std::os::unix::fs::PermissionsExt;

use facegate_daemon::store::{
    DeltaOutcome, DeviceKey, GalleryStore, LiveShard, SnapshotOutcome, StoreConfig, StoreError,
};
use facegate_face::Template;
use facegate_protocol::SnapshotEntry;
use store_support::*;

fn applied(outcome: DeltaOutcome) -> facegate_daemon::store::ApplyReport {
    match outcome {
        DeltaOutcome::Applied(report) => report,
        other => panic!("not applied: {other:?}"),
    }
}

#[test]
fn identities_templates_seqs_and_audit_events_survive_close_and_reopen() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    applied(
        shard.apply_delta(&delta("lobby", 0, 3, vec![upsert("alice", 1, vec![template(1), template(2)])])).unwrap(),
    );
    shard.upsert_local(record("bob", 1), vec![template(3)]).unwrap();
    let seq = shard.append_audit(audit_event(7)).unwrap();
    let before = shard.entries().unwrap();
    drop(shard);

    let shard = fixture.open();
    assert_eq!(shard.entries().unwrap(), before);
    assert_eq!(shard.shard_seq(&store_support::shard("lobby")).unwrap(), 3);
    assert_eq!(shard.shard_seq(&store_support::shard("local")).unwrap(), 1);
    let pending = shard.pending_audit(10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].seq, pending[0].reason.as_deref()), (seq, Some("tag 7")));
    let report = shard.open_report();
    assert_eq!((report.identities, report.templates), (2, 3));
    assert_eq!(shard.read().gallery.len(), 3);
}

#[test]
fn template_vectors_never_reach_the_disk_in_plain_text() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    let secret = template(99);
    shard.upsert_local(record("alice", 1), vec![secret.clone()]).unwrap();
    drop(shard);
    let needle = &secret.vector[..16];
    for file in walk(&fixture.config.dir) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds template bytes", file.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn opening_with_another_key_says_the_key_does_not_match() {
    let fixture = Fixture::new();
    fixture.open().upsert_local(record("alice", 1), vec![template(1)]).unwrap();
    let other = DeviceKey::generate(&fixture.root.path().join("other.key")).unwrap();
    let err = LiveShard::open(&fixture.config, other).unwrap_err();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err:?}");
    assert!(err.to_string().contains("the key does not match this database"), "{err}");
}

#[test]
fn a_key_file_readable_by_others_is_refused_with_the_chmod_fix() {
    let fixture = Fixture::new();
    std::fs::set_permissions(&fixture.key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = DeviceKey::load(&fixture.key_path).unwrap_err();
    assert!(matches!(err, StoreError::KeyPermissions { mode: 0o644, .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("0644") && message.contains("chmod 0400"), "{message}");
    std::fs::set_permissions(&fixture.key_path, std::fs::Permissions::from_mode(0o460)).unwrap();
    assert!(matches!(DeviceKey::load(&fixture.key_path), Err(StoreError::KeyPermissions { .. })));
}

#[test]
fn garbage_written_into_the_database_files_is_a_clear_error_at_open() {
    for target in ["db", "conf"] {
        let fixture = Fixture::new();
        let shard = fixture.open();
        for i in 0..50 {
            shard.upsert_local(record(&format!("p{i}"), 1), vec![template(i)]).unwrap();
        }
        drop(shard);
        let path = fixture.config.dir.join(target);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        let mut rng = Rng::new(5);
        let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        std::fs::write(&path, garbage).unwrap();
        let err = LiveShard::open(&fixture.config, fixture.key()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. } | StoreError::Open { .. }), "{target}: {err:?}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn a_delta_with_a_gap_is_not_applied_and_asks_for_a_resync_from_the_local_seq() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    applied(shard.apply_delta(&delta("lobby", 0, 1, vec![upsert("alice", 1, vec![template(1)])])).unwrap());
    let before = shard.entries().unwrap();
    let gap = delta("lobby", 2, 3, vec![upsert("bob", 1, vec![template(2)])]);
    assert_eq!(shard.apply_delta(&gap).unwrap(), DeltaOutcome::Resync { local_seq: 1 });
    let overlapping = delta("lobby", 0, 2, vec![remove("alice")]);
    assert_eq!(shard.apply_delta(&overlapping).unwrap(), DeltaOutcome::Resync { local_seq: 1 });
    assert_eq!(shard.entries().unwrap(), before);
    assert_eq!(shard.shard_seq(&store_support::shard("lobby")).unwrap(), 1);
    assert_eq!(shard.read().gallery.len(), 1);
}

#[test]
fn a_replayed_delta_is_not_applied_again() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    let first = delta("lobby", 0, 1, vec![upsert("alice", 1, vec![template(1)])]);
    applied(shard.apply_delta(&first).unwrap());
    applied(shard.apply_delta(&delta("lobby", 1, 2, vec![remove("alice")])).unwrap());
    assert_eq!(shard.apply_delta(&first).unwrap(), DeltaOutcome::AlreadyApplied { local_seq: 2 });
    assert!(shard.entries().unwrap().is_empty());
    assert!(shard.read().gallery.is_empty());
}

#[test]
fn removal_from_one_shard_keeps_an_identity_that_another_shard_includes() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    applied(shard.apply_delta(&delta("lobby", 0, 1, vec![upsert("alice", 1, vec![template(1)])])).unwrap());
    applied(shard.apply_delta(&delta("lab", 0, 1, vec![upsert("alice", 1, vec![template(1)])])).unwrap());
    let report = applied(shard.apply_delta(&delta("lobby", 1, 2, vec![remove("alice")])).unwrap());
    assert_eq!(report.removed, 1);
    let alice = shard.entry(&id("alice")).unwrap().unwrap();
    assert_eq!(alice.shards.iter().map(|s| s.as_str()).collect::<Vec<_>>(), ["lab"]);
    assert_eq!(shard.read().gallery.len(), 1);
    applied(shard.apply_delta(&delta("lab", 1, 2, vec![remove("alice")])).unwrap());
    assert!(shard.entry(&id("alice")).unwrap().is_none());
    assert!(shard.read().gallery.is_empty() && shard.read().identities.is_empty());
}

#[test]
fn templates_of_another_model_are_skipped_and_counted() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    let templates = vec![template(1), template_of(OTHER_MODEL, 2), template_of(OTHER_MODEL, 3)];
    let report = applied(shard.apply_delta(&delta("lobby", 0, 1, vec![upsert("alice", 1, templates)])).unwrap());
    assert_eq!(report.skipped_templates, 2);
    let alice = shard.entry(&id("alice")).unwrap().unwrap();
    assert_eq!(alice.templates, vec![template(1)]);
    assert_eq!(shard.read().gallery.len(), 1);
}

#[test]
fn a_malformed_template_of_the_device_model_refuses_the_whole_delta() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    let mut short = template(2);
    short.vector.truncate(12);
    let batch = delta("lobby", 0, 1, vec![upsert("alice", 1, vec![template(1)]), upsert("bob", 1, vec![short])]);
    let err = shard.apply_delta(&batch).unwrap_err();
    assert!(matches!(err, StoreError::InvalidTemplate { index: 0, .. }), "{err:?}");
    assert!(shard.entries().unwrap().is_empty());
    assert_eq!(shard.shard_seq(&store_support::shard("lobby")).unwrap(), 0);
}

#[test]
fn a_newer_record_from_one_shard_is_not_overwritten_by_an_older_one_from_a_lagging_shard() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    applied(shard.apply_delta(&delta("lobby", 0, 1, vec![upsert("alice", 5, vec![template(5)])])).unwrap());
    applied(shard.apply_delta(&delta("lab", 0, 1, vec![upsert("alice", 3, vec![template(3)])])).unwrap());
    let alice = shard.entry(&id("alice")).unwrap().unwrap();
    assert_eq!((alice.record.version, alice.templates.clone(), alice.shards.len()), (5, vec![template(5)], 2));
}

#[test]
fn a_snapshot_replaces_the_shard_membership_and_a_stale_one_changes_nothing() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    let lobby = store_support::shard("lobby");
    applied(
        shard
            .apply_delta(&delta(
                "lobby",
                0,
                4,
                vec![upsert("alice", 1, vec![template(1)]), upsert("bob", 1, vec![template(2)])],
            ))
            .unwrap(),
    );
    shard.upsert_local(record("bob", 1), vec![template(2)]).unwrap();
    let entries = vec![SnapshotEntry { identity: record("carol", 1), templates: vec![template(3)] }];
    let SnapshotOutcome::Applied(report) = shard.apply_snapshot(&lobby, 9, &entries).unwrap() else {
        panic!("snapshot not applied")
    };
    assert_eq!((report.seq, report.upserted, report.removed), (9, 1, 2));
    let ids: Vec<String> = shard.entries().unwrap().iter().map(|e| e.record.id.to_string()).collect();
    assert_eq!(ids, ["bob", "carol"], "bob stays through the local shard");
    assert_eq!(shard.apply_snapshot(&lobby, 8, &[]).unwrap(), SnapshotOutcome::Stale { local_seq: 9 });
    assert_eq!(shard.entries().unwrap().len(), 2);
    assert_eq!(shard.read().gallery.len(), 2);
}

#[test]
fn the_local_shard_cannot_be_changed_by_the_server() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    let err = shard.apply_delta(&delta("local", 0, 1, vec![remove("alice")])).unwrap_err();
    assert!(matches!(err, StoreError::ReservedShard(_)), "{err:?}");
    assert!(matches!(shard.apply_snapshot(&store_support::shard("local"), 1, &[]), Err(StoreError::ReservedShard(_))));
}

#[test]
fn local_upserts_and_removes_move_the_local_seq_and_removing_a_stranger_does_not() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    assert_eq!(shard.upsert_local(record("alice", 1), vec![template(1)]).unwrap().seq, 1);
    assert_eq!(shard.upsert_local(record("alice", 2), vec![template(2), template(3)]).unwrap().seq, 2);
    assert_eq!(shard.read().gallery.len(), 2);
    let report = shard.remove_local(&id("nobody")).unwrap();
    assert_eq!((report.seq, report.removed), (2, 0));
    let report = shard.remove_local(&id("alice")).unwrap();
    assert_eq!((report.seq, report.removed), (3, 1));
    assert!(shard.read().gallery.is_empty());
}

#[test]
fn audit_events_get_consecutive_seqs_and_stay_until_acknowledged() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    let seqs: Vec<u64> = (0..5).map(|i| shard.append_audit(audit_event(i)).unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(shard.outbox_depth().unwrap(), 5);
    let oldest: Vec<u64> = shard.pending_audit(2).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(oldest, [1, 2]);
    assert_eq!(shard.ack_audit(3).unwrap(), 3);
    assert_eq!(shard.ack_audit(3).unwrap(), 0);
    assert_eq!(shard.pending_audit(10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(shard.outbox_depth().unwrap(), 2);
}

#[test]
fn audit_seqs_continue_after_reopen_even_when_everything_was_acknowledged() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    for i in 0..3 {
        shard.append_audit(audit_event(i)).unwrap();
    }
    shard.ack_audit(3).unwrap();
    drop(shard);
    let shard = fixture.open();
    assert_eq!(shard.outbox_depth().unwrap(), 0);
    assert_eq!(shard.append_audit(audit_event(9)).unwrap(), 4);
}

#[test]
fn rotating_the_key_re_encrypts_everything_and_the_old_key_no_longer_opens() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    shard.upsert_local(record("alice", 1), vec![template(1), template(2)]).unwrap();
    let before = shard.entries().unwrap();
    let new_path = fixture.root.path().join("device.key.new");
    shard.store().rotate_key(DeviceKey::generate(&new_path).unwrap()).unwrap();
    assert_eq!(shard.entries().unwrap(), before);
    drop(shard);
    let err = LiveShard::open(&fixture.config, fixture.key()).unwrap_err();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err:?}");
    let shard = LiveShard::open(&fixture.config, DeviceKey::load(&new_path).unwrap()).unwrap();
    assert_eq!(shard.entries().unwrap(), before);
}

#[test]
fn a_database_made_for_another_model_is_refused() {
    let fixture = Fixture::new();
    drop(fixture.open());
    let mut config = fixture.config.clone();
    config.model.id = "another-embedder".into();
    let err = LiveShard::open(&config, fixture.key()).unwrap_err();
    assert!(matches!(err, StoreError::ModelMismatch { .. }), "{err:?}");
}

#[test]
fn opening_a_missing_database_without_create_says_so() {
    let fixture = Fixture::new();
    let config = StoreConfig { create: false, ..fixture.config.clone() };
    assert!(matches!(LiveShard::open(&config, fixture.key()), Err(StoreError::Missing { .. })));
}

#[test]
fn a_second_open_of_the_same_database_says_it_is_in_use() {
    let fixture = Fixture::new();
    let _first = fixture.open();
    let err = LiveShard::open(&fixture.config, fixture.key()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
}

#[test]
fn the_live_gallery_finds_an_applied_identity_and_forgets_a_removed_one() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    let ops = (0..20).map(|i| upsert(&format!("p{i}"), 1, vec![template(i)])).collect();
    applied(shard.apply_delta(&delta("lobby", 0, 1, ops)).unwrap());
    let probe = template(7);
    let probe = Template::from_vector_bytes(MODEL, &probe.vector, DIM).unwrap();
    let best = shard.read().gallery.search(&probe, 1).unwrap();
    assert_eq!((best[0].label.as_str(), best[0].score > 0.999), ("p7", true));
    applied(shard.apply_delta(&delta("lobby", 1, 2, vec![remove("p7")])).unwrap());
    let best = shard.read().gallery.search(&probe, 1).unwrap();
    assert_ne!(best[0].label.as_str(), "p7");
    assert_eq!(shard.read().gallery.len(), 19);
}

const FULL_DISK_CHILD_ENV: &str = "FACEGATE_STORE_FULL_DISK_CHILD";
const FULL_DISK_CHILD: &str = "full_disk_child_appends_until_a_write_fails_and_does_nothing_when_run_directly";

#[test]
fn full_disk_child_appends_until_a_write_fails_and_does_nothing_when_run_directly() {
    let Some(root) = std::env::var_os(FULL_DISK_CHILD_ENV) else {
        return;
    };
    let root = std::path::PathBuf::from(root);
    let config = StoreConfig::new(root.join("db"), model());
    let shard = LiveShard::open(&config, DeviceKey::load(&root.join("device.key")).unwrap()).unwrap();
    let mut acknowledged = 0;
    for i in 0..1_000_000 {
        match shard.append_audit(audit_event(i)) {
            Ok(seq) => acknowledged = seq,
            Err(e) => {
                println!("write-error {} after {acknowledged}: {e}", matches!(e, StoreError::Write { .. }));
                return;
            }
        }
    }
    println!("no error after {acknowledged} events");
}

/// The child runs with a 4 MiB file size limit (RLIMIT_FSIZE, SIGXFSZ
/// ignored), so sled's writes fail with EFBIG as on a full disk.
#[test]
fn a_full_disk_is_a_typed_write_error_and_not_a_silent_drop() {
    let root = tempfile::tempdir().unwrap();
    DeviceKey::generate(&root.path().join("device.key")).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"trap '' XFSZ; ulimit -f 8192; exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args([FULL_DISK_CHILD, "--exact", "--nocapture", "--test-threads=1"])
        .env(FULL_DISK_CHILD_ENV, root.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // libtest prints the test's name on the same line as its output.
    let line = stdout.lines().find_map(|l| l.find("write-error").or_else(|| l.find("no error")).map(|at| &l[at..]));
    assert!(
        line.is_some_and(|l| l.starts_with("write-error true")),
        "status {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    eprintln!("{}", line.unwrap_or_default());
}

#[test]
fn a_purge_forgets_the_shards_in_one_transaction_but_keeps_identities_of_other_shards() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    applied(
        shard
            .apply_delta(&delta(
                "lobby",
                0,
                2,
                vec![upsert("alice", 1, vec![template(1)]), upsert("bob", 1, vec![template(2)])],
            ))
            .unwrap(),
    );
    applied(shard.apply_delta(&delta("lab", 0, 5, vec![upsert("bob", 1, vec![template(2)])])).unwrap());
    shard.upsert_local(record("carol", 1), vec![template(3)]).unwrap();

    let report = shard.purge_shards(&[store_support::shard("lobby")]).unwrap();
    assert_eq!((report.shards, report.removed, report.kept), (1, 1, 1));
    // alice was only in lobby: gone from sled and from the matrix.
    assert!(shard.entry(&id("alice")).unwrap().is_none());
    assert!(!shard.read().identities.contains_key(&id("alice")));
    // bob is also in lab: kept, with his templates, no longer in lobby.
    let bob = shard.entry(&id("bob")).unwrap().unwrap();
    assert_eq!(bob.shards.iter().map(|s| s.as_str()).collect::<Vec<_>>(), ["lab"]);
    assert_eq!(bob.templates, vec![template(2)]);
    assert_eq!(shard.read().gallery.len(), 2);
    // lobby's seq is gone; lab and local are untouched.
    let seqs: Vec<(String, u64)> = shard.shards().unwrap().into_iter().map(|p| (p.shard.to_string(), p.seq)).collect();
    assert_eq!(seqs, [("lab".to_owned(), 5), ("local".to_owned(), 1)]);
    drop(shard);

    // Durable, and a shard assigned again starts from seq 0.
    let shard = fixture.open();
    assert!(shard.entry(&id("alice")).unwrap().is_none());
    assert_eq!(shard.shard_seq(&store_support::shard("lobby")).unwrap(), 0);
    assert!(matches!(
        shard.apply_delta(&delta("lobby", 2, 3, vec![upsert("alice", 2, vec![template(1)])])).unwrap(),
        DeltaOutcome::Resync { local_seq: 0 }
    ));
    applied(shard.apply_delta(&delta("lobby", 0, 3, vec![upsert("alice", 2, vec![template(1)])])).unwrap());
    assert_eq!(shard.read().identities.len(), 3);
}

#[test]
fn the_local_shard_is_never_purged() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    shard.upsert_local(record("carol", 1), vec![template(3)]).unwrap();
    let err = shard.purge_shards(&[store_support::shard("lobby"), store_support::shard("local")]).unwrap_err();
    assert!(matches!(err, StoreError::ReservedShard(_)), "{err}");
    assert!(shard.entry(&id("carol")).unwrap().is_some());
}

#[test]
fn the_outbox_epoch_survives_a_restart_and_changes_with_a_recreated_database() {
    let fixture = Fixture::new();
    let shard = fixture.open();
    let epoch = shard.outbox_epoch();
    assert_ne!(epoch, 0);
    shard.append_audit(audit_event(1)).unwrap();
    assert_eq!(shard.pending_audit(1).unwrap()[0].epoch, epoch);
    drop(shard);

    let shard = fixture.open();
    assert_eq!(shard.outbox_epoch(), epoch);
    assert_eq!(shard.pending_audit(1).unwrap()[0].epoch, epoch);
    drop(shard);

    // The database deleted and created again (same key): a new epoch, so the
    // server cannot take its seq 1 for the seq 1 above.
    std::fs::remove_dir_all(&fixture.config.dir).unwrap();
    let shard = fixture.open();
    assert_ne!(shard.outbox_epoch(), epoch);
    assert_eq!(shard.append_audit(audit_event(2)).unwrap(), 1);
    assert_eq!(shard.pending_audit(1).unwrap()[0].epoch, shard.outbox_epoch());
}
