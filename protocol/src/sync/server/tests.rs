use super::*;
use crate::codec::{decode_verified, encode_device_signed};
use crate::ids::IdentityId;
use crate::messages::{Decision, IdentityRecord, LivenessVerdict, ShardProgress, StageMillis, TemplateRecord};
use crate::signing::{DevicePublicKey, DeviceSigningKey, TrustedKeys};

const T0: UnixMillis = 5_000_000;

fn key() -> SigningKey {
    SigningKey::from_seed(&[1; 32]).unwrap()
}

fn keys() -> TrustedKeys {
    TrustedKeys::new([key().public_key()])
}

fn server() -> ServerSync {
    ServerSync::new(key(), ServerConfig::default(), 1 << 40)
}

fn kiosk() -> DeviceId {
    DeviceId::new("kiosk-1").unwrap()
}

fn lobby() -> ShardId {
    ShardId::new("lobby").unwrap()
}

/// The kiosk's key: one per test process.
fn device_key() -> DeviceSigningKey {
    static PKCS8: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DeviceSigningKey::from_pkcs8(PKCS8.get_or_init(|| DeviceSigningKey::generate_pkcs8().unwrap())).unwrap()
}

fn device_public() -> DevicePublicKey {
    device_key().public_key()
}

fn encode<M: crate::codec::Message>(message: &M) -> Result<Vec<u8>, ProtocolError> {
    encode_device_signed(message, &device_key())
}

fn up(body: Up) -> (String, Vec<u8>) {
    (topics::device_up(&kiosk()), encode(&UpMessage { device: kiosk(), sent_at: T0, body }).unwrap())
}

fn receive(s: &mut ServerSync, now: UnixMillis, (topic, payload): &(String, Vec<u8>)) -> Vec<ServerAction> {
    s.handle(now, ServerInput::Received { topic, payload, key: &device_public() })
}

fn downs(out: &[ServerAction]) -> Vec<Down> {
    out.iter()
        .filter_map(|a| match a {
            ServerAction::Publish(p) => {
                assert_eq!(p.topic, topics::device_down(&kiosk()));
                let message: DownMessage = decode_verified(&p.payload, &keys()).unwrap();
                assert_eq!(message.device, kiosk());
                Some(message.body)
            }
            _ => None,
        })
        .collect()
}

fn removal(seq: u64) -> LogEntry {
    LogEntry { seq, op: DeltaOp::Remove { identity: IdentityId::new(format!("p{seq}")).unwrap() } }
}

fn person(i: usize, template_bytes: usize) -> SnapshotEntry {
    SnapshotEntry {
        identity: IdentityRecord {
            id: IdentityId::new(format!("person-{i}")).unwrap(),
            name: format!("Person {i}"),
            valid_from: None,
            valid_until: None,
            version: 1,
            offline_access: false,
        },
        templates: vec![TemplateRecord { model_id: "dlib".into(), vector: vec![7; template_bytes] }],
    }
}

fn event(seq: u64) -> AuditEvent {
    AuditEvent {
        device: kiosk(),
        epoch: 2,
        seq,
        at: T0,
        decision: Decision::Unknown,
        identity: None,
        score: None,
        liveness: LivenessVerdict::Unsure,
        liveness_score: None,
        reason: None,
        model_id: "dlib".into(),
        frames: 1,
        timings_ms: StageMillis::default(),
    }
}

fn read(s: &mut ServerSync, now: UnixMillis, after_seq: u64, read: LogRead) -> Vec<ServerAction> {
    s.handle(now, ServerInput::LogRead { device: kiosk(), shard: lobby(), after_seq, read })
}

#[test]
fn a_resync_request_reads_the_log_after_the_device_seq() {
    let mut s = server();
    let out = receive(&mut s, T0, &up(Up::ResyncRequest { shard: lobby(), have_seq: 4 }));
    assert!(out.contains(&ServerAction::ReadLog { device: kiosk(), shard: lobby(), after_seq: 4 }));
    assert!(out.contains(&ServerAction::RecordApplied { device: kiosk(), shard: lobby(), seq: 4 }));
}

#[test]
fn repeated_requests_while_a_read_is_in_flight_are_ignored() {
    let mut s = server();
    let request = up(Up::ResyncRequest { shard: lobby(), have_seq: 4 });
    receive(&mut s, T0, &request);
    assert!(receive(&mut s, T0 + 1, &request).is_empty());
    assert_eq!(receive(&mut s, T0 + 30_000, &request).len(), 1, "the read timed out");
    read(&mut s, T0 + 30_001, 4, LogRead::Failed);
    assert_eq!(receive(&mut s, T0 + 30_002, &request).len(), 1);
}

#[test]
fn missing_deltas_are_answered_as_signed_batches_then_the_head() {
    let mut s = server();
    receive(&mut s, T0, &up(Up::ResyncRequest { shard: lobby(), have_seq: 4 }));
    let out = read(&mut s, T0, 4, LogRead::Entries { epoch: 9, head: 7, entries: (5..=7).map(removal).collect() });
    let bodies = downs(&out);
    let [Down::Deltas(batch), Down::Head { shard, seq: 7 }] = bodies.as_slice() else { panic!("{bodies:?}") };
    assert_eq!((batch.base_seq, batch.seq, batch.ops.len()), (4, 7, 3));
    assert_eq!(shard, &lobby());
}

#[test]
fn nothing_new_is_answered_with_the_head_alone() {
    let mut s = server();
    let out = read(&mut s, T0, 7, LogRead::Entries { epoch: 9, head: 7, entries: vec![] });
    assert_eq!(downs(&out), vec![Down::Head { shard: lobby(), seq: 7 }]);
}

#[test]
fn a_hole_in_what_was_read_stops_the_batches_before_it() {
    let mut s = server();
    let entries = vec![removal(5), removal(6), removal(8)];
    // (A hole after some contiguous entries: those are sent, the head says more exists.)
    let out = read(&mut s, T0, 4, LogRead::Entries { epoch: 9, head: 8, entries });
    let bodies = downs(&out);
    let [Down::Deltas(batch), Down::Head { seq: 8, .. }] = bodies.as_slice() else { panic!("{bodies:?}") };
    assert_eq!((batch.base_seq, batch.seq), (4, 6));
}

#[test]
fn large_answers_are_split_into_batches_that_chain() {
    let config = ServerConfig { max_message_bytes: 8 * 1024, ..ServerConfig::default() };
    let mut s = ServerSync::new(key(), config, 0);
    let entries: Vec<LogEntry> = (1..=40)
        .map(|seq| {
            let p = person(seq as usize, 1024);
            LogEntry { seq, op: DeltaOp::Upsert { identity: p.identity, templates: p.templates } }
        })
        .collect();
    let out = read(&mut s, T0, 0, LogRead::Entries { epoch: 9, head: 40, entries });
    for action in &out {
        let ServerAction::Publish(p) = action else { panic!() };
        assert!(p.payload.len() <= 8 * 1024, "{}", p.payload.len());
    }
    let mut at = 0;
    let mut batches = 0;
    for body in downs(&out) {
        match body {
            Down::Deltas(b) => {
                assert_eq!(b.base_seq, at);
                assert_eq!(b.ops.len() as u64, b.seq - b.base_seq);
                at = b.seq;
                batches += 1;
            }
            Down::Head { seq, .. } => assert_eq!(seq, 40),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(at, 40);
    assert!(batches > 4, "{batches}");
}

#[test]
fn a_compacted_log_is_answered_with_a_chunked_snapshot() {
    let config = ServerConfig { max_message_bytes: 16 * 1024, ..ServerConfig::default() };
    let mut s = ServerSync::new(key(), config, 100);
    let request = up(Up::ResyncRequest { shard: lobby(), have_seq: 2 });
    receive(&mut s, T0, &request);
    let out = read(&mut s, T0, 2, LogRead::Compacted { head: 50 });
    assert_eq!(out, vec![ServerAction::ReadSnapshot { device: kiosk(), shard: lobby(), after_seq: 2 }]);
    assert!(receive(&mut s, T0 + 1, &request).is_empty(), "still answering");
    let entries: Vec<SnapshotEntry> = (0..100).map(|i| person(i, 512)).collect();
    let out = read(&mut s, T0 + 2, 2, LogRead::Snapshot { epoch: 9, seq: 50, entries: entries.clone() });
    let bodies = downs(&out);
    let (chunks, rest): (Vec<_>, Vec<_>) = bodies.into_iter().partition(|b| matches!(b, Down::Snapshot(_)));
    assert_eq!(rest, vec![Down::Head { shard: lobby(), seq: 50 }]);
    let chunks: Vec<SnapshotChunk> = chunks
        .into_iter()
        .map(|b| match b {
            Down::Snapshot(c) => c,
            _ => unreachable!(),
        })
        .collect();
    assert!(chunks.len() > 2);
    let snapshot = chunks[0].snapshot;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!((c.index as usize, c.count as usize, c.seq, c.snapshot), (i, chunks.len(), 50, snapshot));
    }
    let joined: Vec<SnapshotEntry> = chunks.into_iter().flat_map(|c| c.entries).collect();
    assert_eq!(joined, entries);
    // The next snapshot gets another id.
    let out = read(&mut s, T0 + 3, 2, LogRead::Snapshot { epoch: 9, seq: 50, entries });
    let Some(Down::Snapshot(c)) = downs(&out).into_iter().next() else { panic!() };
    assert_ne!(c.snapshot, snapshot);
}

#[test]
fn an_empty_shard_snapshot_is_one_empty_chunk() {
    let mut s = server();
    let out = read(&mut s, T0, 0, LogRead::Snapshot { epoch: 9, seq: 3, entries: vec![] });
    let bodies = downs(&out);
    let [Down::Snapshot(c), Down::Head { seq: 3, .. }] = bodies.as_slice() else { panic!("{bodies:?}") };
    assert_eq!((c.index, c.count, c.entries.len()), (0, 1, 0));
}

#[test]
fn a_device_ahead_of_the_log_is_reported_not_answered() {
    let mut s = server();
    let out = read(&mut s, T0, 9, LogRead::Entries { epoch: 9, head: 5, entries: vec![] });
    assert_eq!(out, vec![ServerAction::DeviceAhead { device: kiosk(), shard: lobby(), device_seq: 9, head: 5 }]);
}

#[test]
fn an_audit_batch_is_stored_and_acknowledged_only_once_stored() {
    let mut s = server();
    let batch = up(Up::Audit(AuditBatch { events: vec![event(3), event(4), event(9)] }));
    let out = receive(&mut s, T0, &batch);
    assert_eq!(
        out,
        vec![ServerAction::StoreAudit {
            device: kiosk(),
            epoch: 2,
            events: vec![event(3), event(4), event(9)],
            up_to_seq: 9
        }]
    );
    assert!(s.handle(T0, ServerInput::AuditStoreFailed { device: kiosk(), up_to_seq: 9 }).is_empty());
    let out = s.handle(T0, ServerInput::AuditStored { device: kiosk(), epoch: 2, up_to_seq: 9 });
    assert_eq!(downs(&out), vec![Down::AuditAck { epoch: 2, up_to_seq: 9 }]);
    // A duplicate is stored again (idempotently) and acknowledged again.
    assert_eq!(receive(&mut s, T0, &batch).len(), 1);
}

#[test]
fn applied_acknowledgements_are_tracked_per_device_and_shard() {
    let mut s = server();
    let out = receive(&mut s, T0, &up(Up::Applied { shard: lobby(), seq: 5 }));
    assert_eq!(out, vec![ServerAction::RecordApplied { device: kiosk(), shard: lobby(), seq: 5 }]);
    // A lower report is passed on (the store keeps the maximum; after a new
    // epoch reset it, the lower one is the truth); a repeat is not.
    let out = receive(&mut s, T0, &up(Up::Applied { shard: lobby(), seq: 3 }));
    assert_eq!(out, vec![ServerAction::RecordApplied { device: kiosk(), shard: lobby(), seq: 3 }]);
    assert!(receive(&mut s, T0, &up(Up::Applied { shard: lobby(), seq: 3 })).is_empty());
    assert!(receive(&mut s, T0, &up(Up::Applied { shard: lobby(), seq: 5 })).len() == 1);
    assert_eq!(s.applied_seq(&kiosk(), &lobby()), Some(5));
    let status = DeviceStatus {
        device: kiosk(),
        online: true,
        at: T0,
        shards: vec![ShardProgress { shard: lobby(), seq: 8 }],
        model_id: None,
        version: "0.1.0".into(),
        health: "ok".into(),
        outbox_depth: 0,
        last_command: 0,
        stale: false,
        assignment: 0,
        trusted_key: None,
    };
    let message = (topics::device_status(&kiosk()), encode(&status).unwrap());
    let out = receive(&mut s, T0, &message);
    assert_eq!(
        out,
        vec![
            ServerAction::RecordApplied { device: kiosk(), shard: lobby(), seq: 8 },
            ServerAction::RecordStatus(status)
        ]
    );
}

#[test]
fn uplinks_naming_another_device_or_malformed_are_rejected() {
    let mut s = server();
    let other = DeviceId::new("kiosk-2").unwrap();
    let payload =
        encode(&UpMessage { device: other, sent_at: T0, body: Up::Applied { shard: lobby(), seq: 1 } }).unwrap();
    let topic = topics::device_up(&kiosk());
    let labels = |out: Vec<ServerAction>| -> Vec<&'static str> {
        out.iter()
            .map(|a| match a {
                ServerAction::Rejected { reason, .. } => reason.label(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(
        labels(s.handle(T0, ServerInput::Received { topic: &topic, payload: &payload, key: &device_public() })),
        ["wrong_device"]
    );
    assert_eq!(
        labels(s.handle(T0, ServerInput::Received { topic: &topic, payload: b"\xff", key: &device_public() })),
        ["malformed"]
    );
    let down = topics::device_down(&kiosk());
    assert_eq!(
        labels(s.handle(T0, ServerInput::Received { topic: &down, payload: &payload, key: &device_public() })),
        ["unexpected_topic"]
    );
    let status_topic = topics::device_status(&kiosk());
    assert_eq!(
        labels(s.handle(T0, ServerInput::Received { topic: &status_topic, payload: &payload, key: &device_public() })),
        ["wrong_kind"]
    );
    assert_eq!(s.applied_seq(&kiosk(), &lobby()), None);
}

#[test]
fn published_deltas_and_commands_are_signed_for_their_topic() {
    let s = server();
    let batch = DeltaBatch { shard: lobby(), epoch: 9, base_seq: 1, seq: 2, ops: vec![removal(2).op] };
    let publish = s.publish_delta(&batch).unwrap();
    assert_eq!(publish.topic, "facegate/v1/shard/lobby/delta");
    assert_eq!(decode_verified::<DeltaBatch>(&publish.payload, &keys()).unwrap(), batch);
    let publish = s.command(T0, &kiosk(), 3, Command::Resync).unwrap();
    let message: DownMessage = decode_verified(&publish.payload, &keys()).unwrap();
    assert_eq!(message.body, Down::Command { id: 3, command: Command::Resync });
    assert_eq!(ServerSync::subscriptions("g"), ["$share/g/facegate/v1/device/+/up", "facegate/v1/device/+/status"]);
}

#[test]
fn log_entries_come_from_one_op_per_seq_batches_only() {
    let batch = DeltaBatch { shard: lobby(), epoch: 9, base_seq: 4, seq: 6, ops: vec![removal(5).op, removal(6).op] };
    assert_eq!(LogEntry::from_batch(batch.clone()), Some(vec![removal(5), removal(6)]));
    assert_eq!(LogEntry::from_batch(DeltaBatch { seq: 9, ..batch }), None);
}

#[test]
fn a_log_that_does_not_reach_back_is_treated_as_compacted() {
    let mut s = server();
    let out = read(&mut s, T0, 4, LogRead::Entries { epoch: 9, head: 9, entries: vec![removal(8), removal(9)] });
    assert_eq!(out, vec![ServerAction::ReadSnapshot { device: kiosk(), shard: lobby(), after_seq: 4 }]);
    let out = read(&mut s, T0, 4, LogRead::Entries { epoch: 9, head: 9, entries: vec![] });
    assert_eq!(out, vec![ServerAction::ReadSnapshot { device: kiosk(), shard: lobby(), after_seq: 4 }]);
}

#[test]
fn a_first_report_of_seq_zero_is_recorded_once() {
    let mut s = server();
    let applied = up(Up::Applied { shard: lobby(), seq: 0 });
    assert_eq!(receive(&mut s, T0, &applied).len(), 1);
    assert!(receive(&mut s, T0, &applied).is_empty());
}
