//! proptest strategies for every message type, and fixed samples.

use facegate_protocol::{
    Assignment, AuditBatch, AuditEvent, Command, Decision, DeltaBatch, DeltaOp, DeviceId, DeviceSigningKey,
    DeviceStatus, Down, DownMessage, FreshnessProof, IdentityId, IdentityRecord, LivenessVerdict, ProtocolError,
    ShardId, ShardProgress, SigningKey, SnapshotChunk, SnapshotEntry, StageMillis, TemplateRecord, Up, UpMessage,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

const ID: &str = "[A-Za-z0-9][A-Za-z0-9._-]{0,20}";

pub(crate) fn central_key() -> SigningKey {
    SigningKey::from_seed(&[42; 32]).unwrap()
}

/// The one device key of the test process (ECDSA keys are generated, not seeded).
pub(crate) fn device_key() -> DeviceSigningKey {
    static PKCS8: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DeviceSigningKey::from_pkcs8(PKCS8.get_or_init(|| DeviceSigningKey::generate_pkcs8().unwrap())).unwrap()
}

/// Encodes a device → server message, signed by [`device_key`].
pub(crate) fn encode_up<M: facegate_protocol::Message>(message: &M) -> Result<Vec<u8>, ProtocolError> {
    facegate_protocol::encode_device_signed(message, &device_key())
}

/// Decodes a device → server message signed by [`device_key`].
pub(crate) fn decode_up<M: facegate_protocol::Message>(bytes: &[u8]) -> Result<M, ProtocolError> {
    facegate_protocol::decode_device_verified(bytes, &device_key().public_key())
}

pub(crate) fn device_id() -> impl Strategy<Value = DeviceId> {
    ID.prop_map(|s| DeviceId::new(s).unwrap())
}

pub(crate) fn shard_id() -> impl Strategy<Value = ShardId> {
    ID.prop_map(|s| ShardId::new(s).unwrap())
}

pub(crate) fn identity_id() -> impl Strategy<Value = IdentityId> {
    ID.prop_map(|s| IdentityId::new(s).unwrap())
}

fn window() -> impl Strategy<Value = (Option<i64>, Option<i64>)> {
    prop_oneof![
        Just((None, None)),
        any::<i64>().prop_map(|from| (Some(from), None)),
        any::<i64>().prop_map(|until| (None, Some(until))),
        (any::<i32>(), 1..i64::from(u32::MAX))
            .prop_map(|(from, len)| (Some(i64::from(from)), Some(i64::from(from) + len))),
    ]
}

pub(crate) fn identity_record() -> impl Strategy<Value = IdentityRecord> {
    (identity_id(), ".{0,30}", window(), any::<u64>()).prop_map(|(id, name, (valid_from, valid_until), version)| {
        IdentityRecord { id, name, valid_from, valid_until, version, offline_access: version % 2 == 0 }
    })
}

pub(crate) fn template() -> impl Strategy<Value = TemplateRecord> {
    ("[a-z0-9.-]{1,20}", vec(any::<u8>(), 1..64))
        .prop_map(|(model_id, words)| TemplateRecord { model_id, vector: words.repeat(4) })
}

pub(crate) fn delta_op() -> impl Strategy<Value = DeltaOp> {
    prop_oneof![
        (identity_record(), vec(template(), 0..3))
            .prop_map(|(identity, templates)| DeltaOp::Upsert { identity, templates }),
        identity_id().prop_map(|identity| DeltaOp::Remove { identity }),
    ]
}

pub(crate) fn delta_batch() -> impl Strategy<Value = DeltaBatch> {
    (shard_id(), 0..u64::MAX / 2, 1..1_000u64, vec(delta_op(), 1..5)).prop_map(|(shard, base_seq, span, ops)| {
        DeltaBatch { shard, epoch: 1 + base_seq % 3, base_seq, seq: base_seq + span, ops }
    })
}

pub(crate) fn snapshot_chunk() -> impl Strategy<Value = SnapshotChunk> {
    (shard_id(), any::<u64>(), any::<u64>(), 1..100u32, vec((identity_record(), vec(template(), 0..3)), 0..4))
        .prop_flat_map(|(shard, seq, snapshot, count, entries)| {
            (0..count).prop_map(move |index| SnapshotChunk {
                epoch: 5,
                shard: shard.clone(),
                seq,
                snapshot,
                index,
                count,
                entries: entries
                    .iter()
                    .cloned()
                    .map(|(identity, templates)| SnapshotEntry { identity, templates })
                    .collect(),
            })
        })
}

pub(crate) fn command() -> impl Strategy<Value = Command> {
    prop_oneof![Just(Command::Resync), Just(Command::Wipe), Just(Command::RotateKey)]
}

pub(crate) fn down() -> impl Strategy<Value = Down> {
    prop_oneof![
        delta_batch().prop_map(Down::Deltas),
        snapshot_chunk().prop_map(Down::Snapshot),
        (any::<u64>(), any::<u64>()).prop_map(|(epoch, up_to_seq)| Down::AuditAck { epoch, up_to_seq }),
        (any::<u64>(), 1..u64::MAX, any::<u64>(), vec(shard_id(), 0..4)).prop_map(|(nonce, epoch, version, shards)| {
            let mut shards = shards;
            shards.sort();
            shards.dedup();
            let heads = shards.iter().map(|s| ShardProgress { shard: s.clone(), seq: version / 2 }).collect();
            Down::Freshness(FreshnessProof { nonce, epoch, assignment: Assignment { version, shards }, heads })
        }),
        (any::<u64>(), vec(shard_id(), 0..4)).prop_map(|(version, shards)| {
            let mut shards = shards;
            shards.sort();
            shards.dedup();
            Down::Assignment(Assignment { version, shards })
        }),
        any::<[u8; 32]>().prop_map(|key| Down::KeyRollover { new_key: key.to_vec() }),
        (any::<u64>(), command()).prop_map(|(id, command)| Down::Command { id, command }),
        (shard_id(), any::<u64>()).prop_map(|(shard, seq)| Down::Head { shard, seq }),
    ]
}

pub(crate) fn down_message() -> impl Strategy<Value = DownMessage> {
    (device_id(), any::<i64>(), down()).prop_map(|(device, sent_at, body)| DownMessage { device, sent_at, body })
}

fn millis() -> impl Strategy<Value = f32> {
    0.0f32..1.0e6
}

fn score() -> impl Strategy<Value = Option<f32>> {
    option::of(-1.0f32..1.0)
}

pub(crate) fn audit_event(device: DeviceId, seq: u64) -> impl Strategy<Value = AuditEvent> {
    let decision =
        prop_oneof![Just(Decision::Grant), Just(Decision::Deny), Just(Decision::Unknown), Just(Decision::Spoof)];
    let liveness =
        prop_oneof![Just(LivenessVerdict::Live), Just(LivenessVerdict::Spoof), Just(LivenessVerdict::Unsure)];
    let timings = (millis(), millis(), millis(), millis(), millis(), millis()).prop_map(
        |(detect, align, quality, liveness, embed, matching)| StageMillis {
            detect,
            align,
            quality,
            liveness,
            embed,
            matching,
        },
    );
    (
        any::<i64>(),
        decision,
        option::of(identity_id()),
        score(),
        liveness,
        score(),
        option::of(".{0,40}"),
        "[a-z0-9.-]{1,20}",
        any::<u32>(),
        timings,
    )
        .prop_map(
            move |(at, decision, identity, score, liveness, liveness_score, reason, model_id, frames, timings_ms)| {
                AuditEvent {
                    device: device.clone(),
                    epoch: 3,
                    seq,
                    at,
                    decision,
                    identity,
                    score,
                    liveness,
                    liveness_score,
                    reason,
                    model_id,
                    frames,
                    timings_ms,
                }
            },
        )
}

pub(crate) fn audit_batch(device: DeviceId) -> impl Strategy<Value = AuditBatch> {
    (proptest::collection::btree_set(any::<u64>(), 1..6)).prop_flat_map(move |seqs| {
        let events: Vec<_> = seqs.into_iter().map(|seq| audit_event(device.clone(), seq)).collect();
        events.prop_map(|events| AuditBatch { events })
    })
}

pub(crate) fn up_message() -> impl Strategy<Value = UpMessage> {
    (device_id(), any::<i64>()).prop_flat_map(|(device, sent_at)| {
        let body = prop_oneof![
            (shard_id(), any::<u64>()).prop_map(|(shard, have_seq)| Up::ResyncRequest { shard, have_seq }),
            audit_batch(device.clone()).prop_map(Up::Audit),
            (shard_id(), any::<u64>()).prop_map(|(shard, seq)| Up::Applied { shard, seq }),
            any::<u64>().prop_map(|nonce| Up::FreshnessRequest { nonce }),
        ];
        body.prop_map(move |body| UpMessage { device: device.clone(), sent_at, body })
    })
}

pub(crate) fn device_status() -> impl Strategy<Value = DeviceStatus> {
    (
        device_id(),
        any::<bool>(),
        any::<i64>(),
        vec((shard_id(), any::<u64>()), 0..5),
        option::of("[a-z0-9.-]{1,20}"),
        "[0-9.]{1,10}",
        "[a-z: -]{0,30}",
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(device, online, at, shards, model_id, version, health, outbox_depth, last_command)| {
            DeviceStatus {
                device,
                online,
                at,
                shards: shards.into_iter().map(|(shard, seq)| ShardProgress { shard, seq }).collect(),
                model_id,
                version,
                health,
                outbox_depth,
                last_command,
                stale: outbox_depth % 2 == 1,
                assignment: last_command / 2,
                trusted_key: None,
            }
        })
}
