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
fn audit_events_are_sent_oldest_first_and_kept_until_acknowledged() {
    let mut m = current(0);
    let out = m.handle(T0, DeviceInput::OutboxChanged { depth: 3 });
    assert_eq!(out.iter().filter(|a| matches!(a, DeviceAction::LoadAudit { limit: 64 })).count(), 1);
    assert!(
        m.handle(T0, DeviceInput::OutboxChanged { depth: 4 })
            .iter()
            .all(|a| !matches!(a, DeviceAction::LoadAudit { .. }))
    );
    let out = m.handle(T0, DeviceInput::AuditLoaded { events: vec![event(1), event(2), event(3)] });
    let events = audit_batch(&out);
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    // Nothing else is sent while the batch is unacknowledged.
    assert!(
        m.handle(T0 + 1, DeviceInput::OutboxChanged { depth: 5 })
            .iter()
            .all(|a| !matches!(a, DeviceAction::LoadAudit { .. }))
    );
    // The acknowledgement deletes exactly the batch, then (in that order) the next is loaded.
    let out = m.handle(T0 + 2, down(Down::AuditAck { epoch: 0, up_to_seq: 3 }).input());
    assert_eq!(out, vec![DeviceAction::AckAudit { up_to_seq: 3 }, DeviceAction::LoadAudit { limit: 64 }]);
}

#[test]
fn an_acknowledgement_never_deletes_what_was_not_sent() {
    let mut m = current(0);
    m.handle(T0, DeviceInput::OutboxChanged { depth: 5 });
    m.handle(T0, DeviceInput::AuditLoaded { events: vec![event(1), event(2)] });
    let out = m.handle(T0, down(Down::AuditAck { epoch: 0, up_to_seq: 1_000 }).input());
    assert_eq!(out, vec![DeviceAction::AckAudit { up_to_seq: 2 }, DeviceAction::LoadAudit { limit: 64 }]);
    // A replayed, older acknowledgement does nothing.
    assert!(m.handle(T0, down(Down::AuditAck { epoch: 0, up_to_seq: 1 }).input()).is_empty());
}

#[test]
fn an_unacknowledged_batch_is_retransmitted_with_backoff() {
    let mut m = current(0);
    m.handle(T0, DeviceInput::OutboxChanged { depth: 1 });
    m.handle(T0, DeviceInput::AuditLoaded { events: vec![event(7)] });
    let loads = |out: Vec<DeviceAction>| out.iter().filter(|a| matches!(a, DeviceAction::LoadAudit { .. })).count();
    assert_eq!(loads(m.handle(T0 + 9_999, DeviceInput::Tick)), 0);
    assert_eq!(loads(m.handle(T0 + 10_000, DeviceInput::Tick)), 1);
    m.handle(T0 + 10_000, DeviceInput::AuditLoaded { events: vec![event(7)] });
    assert_eq!(loads(m.handle(T0 + 29_999, DeviceInput::Tick)), 0, "the wait doubled");
    assert_eq!(loads(m.handle(T0 + 30_000, DeviceInput::Tick)), 1);
}

#[test]
fn reconnecting_resends_the_pending_batch_at_once() {
    let mut m = current(0);
    m.handle(T0, DeviceInput::OutboxChanged { depth: 1 });
    m.handle(T0, DeviceInput::AuditLoaded { events: vec![event(7)] });
    m.handle(T0 + 1, DeviceInput::Disconnected);
    // A load answered while offline publishes nothing.
    let out = m.handle(T0 + 2, DeviceInput::Connected);
    assert!(out.iter().any(|a| matches!(a, DeviceAction::LoadAudit { .. })));
    m.handle(T0 + 3, DeviceInput::Disconnected);
    assert!(ups(&m.handle(T0 + 4, DeviceInput::AuditLoaded { events: vec![event(7)] })).is_empty());
}

#[test]
fn unsendable_events_are_corrected_not_dropped() {
    let mut m = current(0);
    m.handle(T0, DeviceInput::OutboxChanged { depth: 1 });
    let mut bad = event(1);
    bad.device = DeviceId::new("someone-else").unwrap();
    bad.score = Some(f32::NAN);
    bad.reason = Some("é".repeat(600));
    bad.model_id = String::new();
    bad.timings_ms.embed = f32::INFINITY;
    let out = m.handle(T0, DeviceInput::AuditLoaded { events: vec![bad] });
    let events = audit_batch(&out);
    let e = &events[0];
    assert_eq!((e.seq, &e.device, e.score, e.model_id.as_str()), (1, &device_id(), None, "unknown"));
    assert_eq!(e.reason.as_ref().unwrap().len(), 1024);
    assert_eq!(e.timings_ms.embed, 0.0);
}

#[test]
fn a_large_outbox_goes_out_in_bounded_batches() {
    let config = DeviceConfig { audit_batch_events: 10, ..DeviceConfig::default() };
    let mut m = machine_at(0, config);
    m.handle(T0, DeviceInput::Connected);
    let out = m.handle(T0, DeviceInput::OutboxChanged { depth: 100 });
    assert!(out.contains(&DeviceAction::LoadAudit { limit: 10 }));
    let out = m.handle(T0, DeviceInput::AuditLoaded { events: (1..=30).map(event).collect() });
    let events = audit_batch(&out);
    assert_eq!(events.len(), 10);
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

// ---- freshness, assignment, epochs, key rollover ----

/// The nonces of the freshness requests published.
fn freshness_requests(out: &[DeviceAction]) -> Vec<u64> {
    out.iter()
        .filter_map(|a| match a {
            DeviceAction::Publish(p) if p.topic.ends_with("/up") => {
                match decode_unverified::<UpMessage>(&p.payload).unwrap().body {
                    Up::FreshnessRequest { nonce } => Some(nonce),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

fn proof(nonce: u64, epoch: u64, version: u64, shards: &[(&str, u64)]) -> Incoming {
    down(Down::Freshness(FreshnessProof {
        nonce,
        epoch,
        assignment: Assignment { version, shards: shards.iter().map(|(s, _)| ShardId::new(*s).unwrap()).collect() },
        heads: shards.iter().map(|(s, seq)| ShardProgress { shard: ShardId::new(*s).unwrap(), seq: *seq }).collect(),
    }))
}

/// A machine with a 30 s staleness bound, connected, that asked for a proof.
fn asking(seq: u64) -> (DeviceSync, u64) {
    let config = DeviceConfig {
        max_staleness_ms: 30_000,
        freshness_interval_ms: DeviceConfig::freshness_interval_for(30_000),
        ..DeviceConfig::default()
    };
    let mut m = machine_at(seq, config);
    let out = m.handle(T0, DeviceInput::Connected);
    let nonces = freshness_requests(&out);
    assert_eq!(nonces.len(), 1, "{out:?}");
    (m, nonces[0])
}

#[test]
fn a_door_is_stale_until_a_proof_answers_its_own_request() {
    let (mut m, nonce) = asking(4);
    assert!(m.is_stale(T0), "no proof since start");
    // A proof for a nonce the door never sent (a replay) verifies nothing.
    let out = m.handle(T0 + 10, proof(nonce ^ 1, EPOCH, 0, &[("lobby", 4)]).input());
    assert_eq!(rejections(&out), ["unknown_nonce"]);
    assert!(m.is_stale(T0 + 10));
    m.handle(T0 + 20, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
    // Fresh as of the moment the request was sent, not when the proof came.
    assert_eq!(m.fresh_until(), Some(T0 + 30_000));
    assert!(!m.is_stale(T0 + 29_999));
    assert!(m.is_stale(T0 + 30_000));
    // The same proof again is a replay.
    let out = m.handle(T0 + 30, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
    assert_eq!(rejections(&out), ["unknown_nonce"]);
}

#[test]
fn a_connected_door_asks_often_enough_never_to_go_stale() {
    let (mut m, nonce) = asking(4);
    m.handle(T0 + 5, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
    let mut now = T0;
    let mut last_request = T0;
    for _ in 0..20 {
        now = m.next_deadline().unwrap();
        let out = m.handle(now, DeviceInput::Tick);
        for nonce in freshness_requests(&out) {
            last_request = now;
            m.handle(now + 50, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
        }
        assert!(!m.is_stale(now + 50), "at {now}");
    }
    assert!(now > T0 + 60_000, "{now}");
    assert_eq!(m.fresh_until(), Some(last_request + 30_000));
}

#[test]
fn withheld_proofs_make_the_door_stale_after_the_bound() {
    let (mut m, nonce) = asking(4);
    m.handle(T0, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
    // The broker drops everything from now on: requests go out, nothing comes back.
    let mut now = T0;
    while now < T0 + 40_000 {
        now = m.next_deadline().unwrap();
        m.handle(now, DeviceInput::Tick);
    }
    assert!(m.is_stale(T0 + 30_000));
    let out = m.handle(T0 + 40_001, DeviceInput::Tick);
    assert!(statuses(&out).iter().all(|s| s.stale), "{out:?}");
}

#[test]
fn a_door_behind_the_head_is_verified_only_once_it_catches_up() {
    let (mut m, nonce) = asking(4);
    // The centre removed someone at seq 5; the delta was withheld.
    let out = m.handle(T0 + 10, proof(nonce, EPOCH, 0, &[("lobby", 5)]).input());
    assert_eq!(resyncs(&out), vec![4], "asks for what it misses");
    assert!(m.is_stale(T0 + 10), "knowingly behind: not verified");
    // Catching up later verifies it as of the request that showed the head.
    m.handle(T0 + 20_000, down(Down::Deltas(batch(4, 5))).input());
    m.handle(T0 + 20_001, DeviceInput::Applied { shard: lobby(), seq: 5 });
    assert_eq!(m.fresh_until(), Some(T0 + 30_000));
}

#[test]
fn a_door_ahead_of_the_log_is_never_verified() {
    let (mut m, nonce) = asking(9);
    let out = m.handle(T0, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
    assert_eq!(rejections(&out), ["ahead_of_log"]);
    assert!(m.is_stale(T0));
}

#[test]
fn staleness_off_is_never_stale() {
    let config = DeviceConfig { max_staleness_ms: 0, ..quiet() };
    let m = machine_at(4, config);
    assert_eq!(m.fresh_until(), None);
    assert!(!m.is_stale(i64::MAX - 1));
}

#[test]
fn a_new_epoch_purges_every_synced_shard_before_anything_is_verified() {
    let (mut m, nonce) = asking(7);
    let out = m.handle(T0, proof(nonce, EPOCH + 1, 0, &[("lobby", 2)]).input());
    assert!(out.contains(&DeviceAction::PurgeShards(vec![lobby()])), "{out:?}");
    assert!(!out.iter().any(|a| matches!(a, DeviceAction::Persist(_))), "persisted only after the purge");
    assert!(m.is_stale(T0));
    // Deltas of the old epoch are refused from now on.
    let out = m.handle(T0 + 1, delta(7, 8).input());
    assert_eq!(rejections(&out), ["wrong_epoch"]);
    let out = m.handle(T0 + 2, DeviceInput::Purged { shards: vec![lobby()] });
    assert!(out.contains(&DeviceAction::Persist(Persisted {
        epoch: EPOCH + 1,
        assignment: Assignment { version: 0, shards: vec![lobby()] },
    })));
    assert_eq!(m.applied_seq(&lobby()), Some(0));
    assert_eq!(m.epoch(), EPOCH + 1);
    assert_eq!(resyncs(&out), vec![0], "fetches the shard anew");
}

#[test]
fn a_failed_purge_keeps_the_door_stale_and_is_tried_again() {
    let (mut m, nonce) = asking(7);
    m.handle(T0, proof(nonce, EPOCH + 1, 0, &[("lobby", 2)]).input());
    let out = m.handle(T0 + 1, DeviceInput::PurgeFailed { shards: vec![lobby()] });
    assert!(!out.iter().any(|a| matches!(a, DeviceAction::PurgeShards(_))));
    assert!(m.is_stale(T0 + 1));
    let retry = m.next_deadline().unwrap();
    assert!(retry <= T0 + 1 + 1_000, "{retry}");
    let out = m.handle(retry, DeviceInput::Tick);
    assert!(out.contains(&DeviceAction::PurgeShards(vec![lobby()])), "{out:?}");
}

#[test]
fn an_assignment_adds_and_drops_shards_and_purges_the_dropped() {
    let mut m = current(4);
    let lab = ShardId::new("lab").unwrap();
    let push = down(Down::Assignment(Assignment { version: 3, shards: vec![lab.clone()] }));
    let out = m.handle(T0 + 1, push.input());
    assert!(out.contains(&DeviceAction::Unsubscribe(vec![topics::shard_delta(&lobby())])), "{out:?}");
    assert!(out.contains(&DeviceAction::Subscribe(vec![topics::shard_delta(&lab)])), "{out:?}");
    assert!(out.contains(&DeviceAction::PurgeShards(vec![lobby()])), "{out:?}");
    assert_eq!(m.shards(), vec![lab.clone()]);
    // Deltas of the dropped shard are refused at once.
    assert_eq!(rejections(&m.handle(T0 + 2, delta(4, 5).input())), ["unassigned_shard"]);
    let out = m.handle(T0 + 3, DeviceInput::Purged { shards: vec![lobby()] });
    assert!(out.contains(&DeviceAction::Persist(Persisted {
        epoch: EPOCH,
        assignment: Assignment { version: 3, shards: vec![lab.clone()] },
    })));
    // The same or an older assignment again (a replay) changes nothing.
    let out = m.handle(T0 + 4, push.input());
    assert_eq!(rejections(&out), ["old_assignment"]);
    let status = m.handle(T0 + 10_000, DeviceInput::Tick);
    let status = statuses(&status);
    assert_eq!(status.last().map(|s| s.assignment), Some(3));
}

#[test]
fn a_proof_carries_the_assignment_for_a_door_that_missed_the_push() {
    let (mut m, nonce) = asking(4);
    let out = m.handle(T0, proof(nonce, EPOCH, 2, &[]).input());
    assert!(out.contains(&DeviceAction::PurgeShards(vec![lobby()])), "{out:?}");
    assert!(m.shards().is_empty());
    assert!(m.is_stale(T0), "stale until the purge is done");
    m.handle(T0 + 1, DeviceInput::Purged { shards: vec![lobby()] });
    assert!(!m.is_stale(T0 + 1), "a door with no shards is fresh as of the proof");
}

#[test]
fn a_key_rollover_signed_by_the_pinned_key_replaces_it() {
    let mut m = current(4);
    let next = SigningKey::from_seed(&[5; 32]).unwrap();
    let out = m.handle(T0, down(Down::KeyRollover { new_key: next.public_key().as_bytes().to_vec() }).input());
    assert_eq!(
        out.iter().filter(|a| matches!(a, DeviceAction::TrustKeys(k) if k == &vec![next.public_key()])).count(),
        1
    );
    // The old key is no longer trusted; the new one is.
    assert_eq!(rejections(&m.handle(T0, delta(4, 5).input())), ["unknown_key"]);
    let signed = encode_signed(&batch(4, 5), &next).unwrap();
    let topic = topics::shard_delta(&lobby());
    let out = m.handle(T0, DeviceInput::Received { topic: &topic, payload: &signed });
    assert_eq!(applies(&out), vec![(4, 5)]);
    // A rollover signed by anyone else is refused.
    let attacker = SigningKey::from_seed(&[6; 32]).unwrap();
    let message = DownMessage {
        device: device_id(),
        sent_at: T0,
        body: Down::KeyRollover { new_key: attacker.public_key().as_bytes().to_vec() },
    };
    let forged = encode_signed(&message, &attacker).unwrap();
    let topic = topics::device_down(&device_id());
    let out = m.handle(T0, DeviceInput::Received { topic: &topic, payload: &forged });
    assert_eq!(rejections(&out), ["unknown_key"]);
}

#[test]
fn every_uplink_is_signed_by_the_device_key() {
    let device_key = signer();
    let public = device_key.public_key();
    let state =
        DeviceState { shards: vec![ShardProgress { shard: lobby(), seq: 0 }], epoch: EPOCH, ..DeviceState::default() };
    let keys = TrustedKeys::new([key().public_key()]);
    let mut m = DeviceSync::new(device_id(), keys, device_key, quiet(), state, status_info(), T0);
    let out = m.handle(T0, DeviceInput::Connected);
    let mut published = 0;
    for action in &out {
        if let DeviceAction::Publish(p) = action {
            published += 1;
            if p.topic.ends_with("/status") {
                crate::codec::decode_device_verified::<DeviceStatus>(&p.payload, &public).unwrap();
            } else {
                crate::codec::decode_device_verified::<UpMessage>(&p.payload, &public).unwrap();
            }
        }
    }
    assert!(published >= 3, "{out:?}");
}

#[test]
fn audit_acknowledgements_of_another_outbox_epoch_are_ignored() {
    let mut m = current(0);
    m.handle(T0, DeviceInput::OutboxChanged { depth: 2 });
    m.handle(T0, DeviceInput::AuditLoaded { events: vec![event(1), event(2)] });
    let out = m.handle(T0, down(Down::AuditAck { epoch: 77, up_to_seq: 2 }).input());
    assert_eq!(rejections(&out), ["wrong_epoch"]);
}

/// Found by the convergence simulation: a proof delayed in the network
/// reached a shard that had moved past its head meanwhile, and was taken for
/// a log gone back. Only a device that was past the head when it *asked* shows
/// a log gone back.
#[test]
fn a_delayed_proof_still_verifies_a_shard_that_moved_on() {
    let (mut m, nonce) = asking(4);
    m.handle(T0 + 1, delta(4, 6).input());
    m.handle(T0 + 2, DeviceInput::Applied { shard: lobby(), seq: 6 });
    let out = m.handle(T0 + 3, proof(nonce, EPOCH, 0, &[("lobby", 5)]).input());
    assert!(rejections(&out).is_empty(), "{out:?}");
    assert_eq!(m.fresh_until(), Some(T0 + 30_000));
}

/// Reported by the server side: the status must not show a new assignment
/// before the shards it dropped are purged, or the centre counts an erasure
/// done by a door that still holds the person.
#[test]
fn the_status_reports_an_assignment_only_once_its_purge_is_done() {
    let mut m = current(4);
    let lab = ShardId::new("lab").unwrap();
    m.handle(T0 + 1, down(Down::Assignment(Assignment { version: 3, shards: vec![lab] })).input());
    let before = statuses(&m.handle(T0 + 10_000, DeviceInput::Tick));
    assert!(before.iter().all(|s| s.assignment == 0), "{before:?}");
    m.handle(T0 + 10_001, DeviceInput::Purged { shards: vec![lobby()] });
    let after = statuses(&m.handle(T0 + 20_000, DeviceInput::Tick));
    assert_eq!(after.last().map(|s| s.assignment), Some(3));
}
