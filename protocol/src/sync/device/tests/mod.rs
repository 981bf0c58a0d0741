use super::*;
use crate::codec::{Kind, decode_unverified, encode_signed, seal_unchecked};
use crate::ids::IdentityId;
use crate::messages::{Assignment, FreshnessProof};
use crate::messages::{AuditBatch, Decision, DeltaOp, IdentityRecord, LivenessVerdict, StageMillis};
use crate::signing::{DeviceSigningKey, SigningKey};

const T0: UnixMillis = 1_000_000;

fn key() -> SigningKey {
    SigningKey::from_seed(&[1; 32]).unwrap()
}

fn device_id() -> DeviceId {
    DeviceId::new("kiosk-1").unwrap()
}

fn lobby() -> ShardId {
    ShardId::new("lobby").unwrap()
}

fn status_info() -> StatusInfo {
    StatusInfo { model_id: Some("dlib".into()), version: "0.1.0".into(), health: "ok".into() }
}

/// The log epoch of these tests.
const EPOCH: u64 = 9;

fn signer() -> DeviceSigningKey {
    DeviceSigningKey::from_pkcs8(&DeviceSigningKey::generate_pkcs8().unwrap()).unwrap()
}

fn machine_at(seq: u64, config: DeviceConfig) -> DeviceSync {
    let state = DeviceState {
        shards: vec![ShardProgress { shard: lobby(), seq }],
        last_command_id: 10,
        outbox_depth: 0,
        epoch: EPOCH,
        ..DeviceState::default()
    };
    DeviceSync::new(device_id(), TrustedKeys::new([key().public_key()]), signer(), config, state, status_info(), T0)
}

/// The default timers, but freshness requests only hourly (their own tests
/// set them).
fn quiet() -> DeviceConfig {
    DeviceConfig { freshness_interval_ms: 3_600_000, ..DeviceConfig::default() }
}

/// A connected machine at `seq` that has been told it is current.
fn current(seq: u64) -> DeviceSync {
    let mut m = machine_at(seq, quiet());
    m.handle(T0, DeviceInput::Connected);
    let out = m.handle(T0, down(Down::Head { shard: lobby(), seq }).input());
    assert!(out.is_empty(), "{out:?}");
    m
}

fn batch(base_seq: u64, seq: u64) -> DeltaBatch {
    DeltaBatch {
        shard: lobby(),
        epoch: EPOCH,
        base_seq,
        seq,
        ops: (base_seq..seq).map(|i| DeltaOp::Remove { identity: IdentityId::new(format!("p{i}")).unwrap() }).collect(),
    }
}

struct Incoming {
    topic: String,
    payload: Vec<u8>,
}

impl Incoming {
    fn input(&self) -> DeviceInput<'_> {
        DeviceInput::Received { topic: &self.topic, payload: &self.payload }
    }
}

fn delta(base_seq: u64, seq: u64) -> Incoming {
    Incoming { topic: topics::shard_delta(&lobby()), payload: encode_signed(&batch(base_seq, seq), &key()).unwrap() }
}

fn down(body: Down) -> Incoming {
    let message = DownMessage { device: device_id(), sent_at: T0, body };
    Incoming { topic: topics::device_down(&device_id()), payload: encode_signed(&message, &key()).unwrap() }
}

fn chunk(seq: u64, snapshot: u64, index: u32, count: u32) -> Incoming {
    let entry = SnapshotEntry {
        identity: IdentityRecord {
            id: IdentityId::new(format!("s{index}")).unwrap(),
            name: "x".into(),
            valid_from: None,
            valid_until: None,
            version: 1,
            offline_access: false,
        },
        templates: vec![],
    };
    down(Down::Snapshot(SnapshotChunk {
        shard: lobby(),
        epoch: EPOCH,
        seq,
        snapshot,
        index,
        count,
        entries: vec![entry],
    }))
}

fn event(seq: u64) -> AuditEvent {
    AuditEvent {
        device: device_id(),
        epoch: 0,
        seq,
        at: T0,
        decision: Decision::Grant,
        identity: None,
        score: Some(0.9),
        liveness: LivenessVerdict::Live,
        liveness_score: None,
        reason: None,
        model_id: "dlib".into(),
        frames: 3,
        timings_ms: StageMillis::default(),
    }
}

fn applies(out: &[DeviceAction]) -> Vec<(u64, u64)> {
    out.iter()
        .filter_map(|a| match a {
            DeviceAction::ApplyDelta(b) => Some((b.base_seq, b.seq)),
            _ => None,
        })
        .collect()
}

fn ups(out: &[DeviceAction]) -> Vec<Up> {
    out.iter()
        .filter_map(|a| match a {
            DeviceAction::Publish(p) if p.topic.ends_with("/up") => {
                match decode_unverified::<UpMessage>(&p.payload).unwrap().body {
                    Up::FreshnessRequest { .. } => None,
                    body => Some(body),
                }
            }
            _ => None,
        })
        .collect()
}

fn statuses(out: &[DeviceAction]) -> Vec<DeviceStatus> {
    out.iter()
        .filter_map(|a| match a {
            DeviceAction::Publish(p) if p.topic.ends_with("/status") => {
                assert!(p.retain);
                Some(decode_unverified::<DeviceStatus>(&p.payload).unwrap())
            }
            _ => None,
        })
        .collect()
}

/// The one audit batch published.
fn audit_batch(out: &[DeviceAction]) -> Vec<AuditEvent> {
    match ups(out).as_slice() {
        [Up::Audit(AuditBatch { events })] => events.clone(),
        other => panic!("{other:?}"),
    }
}

fn resyncs(out: &[DeviceAction]) -> Vec<u64> {
    ups(out)
        .into_iter()
        .filter_map(|u| match u {
            Up::ResyncRequest { have_seq, .. } => Some(have_seq),
            _ => None,
        })
        .collect()
}

fn rejections(out: &[DeviceAction]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|a| match a {
            DeviceAction::Rejected { reason, .. } => Some(reason.label()),
            _ => None,
        })
        .collect()
}

#[test]
fn connecting_publishes_status_and_asks_about_every_shard() {
    let mut m = machine_at(4, DeviceConfig::default());
    assert_eq!(m.subscriptions(), vec!["facegate/v1/shard/lobby/delta", "facegate/v1/device/kiosk-1/down"]);
    let will = decode_unverified::<DeviceStatus>(&m.last_will(T0).unwrap().payload).unwrap();
    assert!(!will.online);
    assert!(m.handle(T0, DeviceInput::Tick).is_empty(), "nothing is sent while offline");
    let out = m.handle(T0, DeviceInput::Connected);
    assert_eq!(resyncs(&out), vec![4]);
    let status = statuses(&out);
    assert_eq!(status.len(), 1);
    assert!(status[0].online);
    assert_eq!(status[0].shards, vec![ShardProgress { shard: lobby(), seq: 4 }]);
}

#[test]
fn a_batch_at_the_applied_seq_is_applied_and_acknowledged() {
    let mut m = current(4);
    let out = m.handle(T0, delta(4, 6).input());
    assert_eq!(applies(&out), vec![(4, 6)]);
    assert!(ups(&out).is_empty(), "nothing is acknowledged before the store reports");
    let out = m.handle(T0, DeviceInput::Applied { shard: lobby(), seq: 6 });
    assert_eq!(ups(&out), vec![Up::Applied { shard: lobby(), seq: 6 }]);
    assert_eq!(m.applied_seq(&lobby()), Some(6));
}

#[test]
fn duplicates_and_replays_of_applied_batches_are_refused_as_stale() {
    let mut m = current(4);
    m.handle(T0, delta(4, 5).input());
    // The same batch again while its apply is in flight, and after.
    assert_eq!(rejections(&m.handle(T0, delta(4, 5).input())), vec!["stale"]);
    m.handle(T0, DeviceInput::Applied { shard: lobby(), seq: 5 });
    let out = m.handle(T0, delta(4, 5).input());
    let [DeviceAction::Rejected { reason, .. }] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!(reason.to_string(), "delta 4..5 of shard lobby is not after the applied seq 5: a duplicate or a replay");
    assert!(reason.is_ordering());
    assert_eq!(rejections(&m.handle(T0, delta(0, 3).input())), vec!["stale"]);
    assert!(m.is_idle());
}

#[test]
fn a_gap_asks_for_a_resync_and_applies_in_order_once_filled() {
    let mut m = current(4);
    let out = m.handle(T0 + 10, delta(6, 7).input());
    assert!(applies(&out).is_empty());
    assert_eq!(resyncs(&out), vec![4]);
    assert_eq!(rejections(&out), vec!["gap"], "held back, and counted");
    let out = m.handle(T0 + 20, delta(7, 8).input());
    assert!(resyncs(&out).is_empty(), "one request per backoff period");
    // The missing batch arrives (answer to the resync): 4→6, then the buffered 6→7, 7→8.
    let out = m.handle(T0 + 30, down(Down::Deltas(batch(4, 6))).input());
    assert_eq!(applies(&out), vec![(4, 6)]);
    let out = m.handle(T0 + 31, DeviceInput::Applied { shard: lobby(), seq: 6 });
    assert_eq!(applies(&out), vec![(6, 7)]);
    let out = m.handle(T0 + 32, DeviceInput::Applied { shard: lobby(), seq: 7 });
    assert_eq!(applies(&out), vec![(7, 8)]);
    m.handle(T0 + 33, DeviceInput::Applied { shard: lobby(), seq: 8 });
    m.handle(T0 + 34, down(Down::Head { shard: lobby(), seq: 8 }).input());
    assert!(m.is_idle());
}

#[test]
fn resync_requests_back_off_exponentially_until_answered() {
    let mut m = current(4);
    m.handle(T0, delta(6, 7).input());
    let mut sent = Vec::new();
    let mut now = T0;
    while now < T0 + 200_000 {
        now += 100;
        if !resyncs(&m.handle(now, DeviceInput::Tick)).is_empty() {
            sent.push(now - T0);
        }
    }
    // 1 s, then 2, 4, 8, 16, 32, then every 60 s.
    assert_eq!(sent, vec![1_000, 3_000, 7_000, 15_000, 31_000, 63_000, 123_000, 183_000]);
    // An answer with progress resets the backoff.
    m.handle(now, down(Down::Deltas(batch(4, 6))).input());
    m.handle(now, DeviceInput::Applied { shard: lobby(), seq: 6 });
    m.handle(now, DeviceInput::Applied { shard: lobby(), seq: 7 });
    m.handle(now, down(Down::Head { shard: lobby(), seq: 7 }).input());
    let out = m.handle(now + 1, delta(9, 10).input());
    assert_eq!(resyncs(&out), vec![7]);
}

#[test]
fn a_head_beyond_a_partial_answer_asks_for_the_rest_at_once() {
    let mut m = current(0);
    let out = m.handle(T0 + 1, delta(5, 6).input());
    assert_eq!(resyncs(&out), vec![0]);
    m.handle(T0 + 2, down(Down::Deltas(batch(0, 3))).input());
    m.handle(T0 + 3, down(Down::Head { shard: lobby(), seq: 6 }).input());
    let out = m.handle(T0 + 4, DeviceInput::Applied { shard: lobby(), seq: 3 });
    assert_eq!(resyncs(&out), vec![3], "progress was made: no backoff");
}

#[test]
fn the_shard_is_checked_periodically_even_without_a_gap() {
    let mut m = current(4);
    let deadline = m.next_deadline().unwrap();
    assert_eq!(deadline, T0 + 300_000);
    assert!(resyncs(&m.handle(deadline - 1, DeviceInput::Tick)).is_empty());
    assert_eq!(resyncs(&m.handle(deadline, DeviceInput::Tick)), vec![4]);
}

#[test]
fn a_failed_apply_is_retried_through_a_resync() {
    let mut m = current(4);
    m.handle(T0, delta(4, 5).input());
    let out = m.handle(T0 + 1, DeviceInput::ApplyFailed { shard: lobby() });
    assert_eq!(resyncs(&out), vec![4]);
    assert_eq!(m.applied_seq(&lobby()), Some(4));
}

#[test]
fn a_refused_apply_adopts_the_store_seq() {
    let mut m = current(4);
    m.handle(T0, delta(4, 5).input());
    let out = m.handle(T0 + 1, DeviceInput::ApplyRefused { shard: lobby(), local_seq: 9 });
    assert_eq!(resyncs(&out), vec![9]);
    assert_eq!(m.applied_seq(&lobby()), Some(9));
}

#[test]
fn an_overlapping_batch_is_not_applied() {
    let mut m = current(4);
    let out = m.handle(T0, delta(3, 6).input());
    assert!(applies(&out).is_empty());
    assert_eq!(resyncs(&out), vec![4]);
    assert_eq!(rejections(&out), vec!["overlap"]);
}

#[test]
fn snapshot_chunks_are_assembled_then_applied_once() {
    let mut m = current(2);
    assert!(m.handle(T0, chunk(9, 77, 1, 3).input()).is_empty());
    assert!(m.handle(T0, chunk(9, 77, 0, 3).input()).is_empty());
    assert!(m.handle(T0, chunk(9, 77, 0, 3).input()).is_empty(), "a duplicate chunk");
    let out = m.handle(T0, chunk(9, 77, 2, 3).input());
    let [DeviceAction::ApplySnapshot { shard, seq: 9, entries }] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!(shard, &lobby());
    let ids: Vec<&str> = entries.iter().map(|e| e.identity.id.as_str()).collect();
    assert_eq!(ids, ["s0", "s1", "s2"], "in chunk order");
    m.handle(T0, DeviceInput::Applied { shard: lobby(), seq: 9 });
    assert!(m.handle(T0, chunk(9, 77, 2, 3).input()).is_empty(), "a replayed chunk of an applied snapshot");
    // Deltas from the snapshot's seq on apply.
    assert_eq!(applies(&m.handle(T0, delta(9, 10).input())), vec![(9, 10)]);
}

#[test]
fn a_stale_snapshot_is_ignored() {
    let mut m = current(12);
    assert!(m.handle(T0, chunk(9, 1, 0, 1).input()).is_empty());
    assert!(m.handle(T0, chunk(12, 1, 0, 1).input()).is_empty());
    assert_eq!(m.applied_seq(&lobby()), Some(12));
}

#[test]
fn chunks_of_two_snapshots_do_not_mix() {
    let mut m = current(0);
    m.handle(T0, chunk(5, 1, 0, 2).input());
    m.handle(T0, chunk(5, 2, 1, 2).input());
    let out = m.handle(T0, chunk(5, 2, 0, 2).input());
    assert!(matches!(out.as_slice(), [DeviceAction::ApplySnapshot { seq: 5, .. }]), "{out:?}");
    let out = m.handle(T0, chunk(6, 3, 0, 3).input());
    assert!(out.is_empty());
    let out = m.handle(T0, chunk(6, 3, 1, 2).input());
    assert_eq!(rejections(&out), vec!["inconsistent_snapshot"]);
}

#[test]
fn an_incomplete_snapshot_times_out_and_is_asked_for_again() {
    let mut m = current(0);
    m.handle(T0, chunk(5, 1, 0, 2).input());
    assert_eq!(m.next_deadline(), Some(T0 + 60_000));
    let out = m.handle(T0 + 60_000, DeviceInput::Tick);
    assert_eq!(resyncs(&out), vec![0]);
    assert!(m.handle(T0 + 60_001, chunk(5, 1, 1, 2).input()).is_empty(), "the other half alone is not applied");
}

#[test]
fn forged_misdirected_and_garbage_messages_are_rejected_and_change_nothing() {
    let mut m = current(4);
    let attacker = SigningKey::from_seed(&[2; 32]).unwrap();
    let forged = encode_signed(&batch(4, 5), &attacker).unwrap();
    let shard_topic = topics::shard_delta(&lobby());
    let other_shard = topics::shard_delta(&ShardId::new("vault").unwrap());
    let mut body = Vec::new();
    ciborium::into_writer(&batch(4, 5), &mut body).unwrap();
    let unsigned = seal_unchecked(Kind::Delta, &body, None).unwrap();
    let for_other = encode_signed(
        &DownMessage {
            device: DeviceId::new("kiosk-2").unwrap(),
            sent_at: T0,
            body: Down::AuditAck { epoch: 0, up_to_seq: 99 },
        },
        &key(),
    )
    .unwrap();
    let vault_batch =
        encode_signed(&DeltaBatch { shard: ShardId::new("vault").unwrap(), ..batch(4, 5) }, &key()).unwrap();
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (shard_topic.clone(), forged, "unknown_key"),
        (shard_topic.clone(), unsigned, "unsigned"),
        (shard_topic.clone(), b"garbage".to_vec(), "malformed"),
        (shard_topic.clone(), vec![0; Kind::Delta.max_bytes() + 1], "too_large"),
        (shard_topic.clone(), vault_batch.clone(), "shard_mismatch"),
        (other_shard, vault_batch, "unassigned_shard"),
        (topics::device_down(&device_id()), for_other.clone(), "wrong_device"),
        (topics::device_down(&DeviceId::new("kiosk-2").unwrap()), for_other, "unexpected_topic"),
        (topics::device_up(&device_id()), b"x".to_vec(), "unexpected_topic"),
        ("something/else".into(), b"x".to_vec(), "unexpected_topic"),
    ];
    for (topic, payload, label) in cases {
        let out = m.handle(T0, DeviceInput::Received { topic: &topic, payload: &payload });
        assert_eq!(rejections(&out), vec![label], "{topic}");
        assert_eq!(out.len(), 1, "{out:?}");
    }
    assert_eq!(m.applied_seq(&lobby()), Some(4));
    assert!(m.is_idle());
}

#[test]
fn commands_run_once_and_replays_are_refused() {
    let mut m = current(4);
    let out = m.handle(T0, down(Down::Command { id: 11, command: Command::RotateKey }).input());
    assert_eq!(out, vec![DeviceAction::Execute { id: 11, command: Command::RotateKey }]);
    let out = m.handle(T0, down(Down::Command { id: 11, command: Command::RotateKey }).input());
    assert_eq!(rejections(&out), vec!["replayed_command"]);
    let out = m.handle(T0, down(Down::Command { id: 5, command: Command::Wipe }).input());
    assert_eq!(rejections(&out), vec!["replayed_command"]);
    assert!(!m.is_wiped());
}

#[test]
fn a_resync_command_asks_about_every_shard_at_once() {
    let mut m = current(4);
    let out = m.handle(T0 + 5, down(Down::Command { id: 12, command: Command::Resync }).input());
    assert!(out.contains(&DeviceAction::Execute { id: 12, command: Command::Resync }));
    assert_eq!(resyncs(&out), vec![4]);
}

#[test]
fn a_wipe_stops_syncing() {
    let mut m = current(4);
    let out = m.handle(T0, down(Down::Command { id: 12, command: Command::Wipe }).input());
    assert!(out.contains(&DeviceAction::Execute { id: 12, command: Command::Wipe }));
    assert!(m.is_wiped());
    // Its last status goes out at once, whatever the rate limit.
    let status = statuses(&out);
    assert_eq!(status.len(), 1, "{out:?}");
    assert!(!status[0].online);
    assert_eq!((status[0].health.as_str(), status[0].last_command), ("wiped", 12));
    let out = m.handle(T0, delta(0, 1).input());
    assert_eq!(rejections(&out), vec!["wiped"]);
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn status_changes_are_published_at_a_bounded_rate() {
    let mut m = current(4);
    let out =
        m.handle(T0 + 1, DeviceInput::StatusChanged(StatusInfo { health: "camera-lost".into(), ..status_info() }));
    assert!(statuses(&out).is_empty(), "the connect status went out at T0");
    assert_eq!(m.next_deadline(), Some(T0 + 5_000));
    let out = m.handle(T0 + 5_000, DeviceInput::Tick);
    let status = statuses(&out);
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].health, "camera-lost");
    // No change: no status.
    assert!(statuses(&m.handle(T0 + 20_000, DeviceInput::Tick)).is_empty());
    // An applied delta changes the status.
    m.handle(T0 + 20_000, delta(4, 5).input());
    let status = statuses(&m.handle(T0 + 20_001, DeviceInput::Applied { shard: lobby(), seq: 5 }));
    assert_eq!(status[0].shards, vec![ShardProgress { shard: lobby(), seq: 5 }]);
}

#[test]
fn future_batches_buffered_are_bounded() {
    let config = DeviceConfig { max_buffered_batches: 2, ..DeviceConfig::default() };
    let mut m = machine_at(0, config);
    m.handle(T0, DeviceInput::Connected);
    for base in (2..10).rev() {
        m.handle(T0, delta(base, base + 1).input());
    }
    // The two nearest were kept: 0→2 arrives, then 2→3 and 3→4 apply, 4→5 was dropped.
    let mut out = m.handle(T0, down(Down::Deltas(batch(0, 2))).input());
    let mut applied = Vec::new();
    while let Some((base, seq)) = applies(&out).first().copied() {
        applied.push((base, seq));
        out = m.handle(T0, DeviceInput::Applied { shard: lobby(), seq });
    }
    assert_eq!(applied, vec![(0, 2), (2, 3), (3, 4)]);
}

#[test]
fn no_deadline_is_due_while_an_apply_is_in_flight() {
    let mut m = current(4);
    m.handle(T0, delta(6, 7).input());
    m.handle(T0 + 1, down(Down::Deltas(batch(4, 6))).input());
    // The store has not answered; the shell must not be woken in a loop.
    let now = T0 + 5_000;
    assert!(m.next_deadline().is_none_or(|d| d > now), "{:?}", m.next_deadline());
}

mod audit;
mod freshness;
