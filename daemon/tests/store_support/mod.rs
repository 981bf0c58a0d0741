//! Shared fixtures of the store tests: a database with its key in a temporary
//! directory, deterministic templates, records, deltas and audit events.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::path::PathBuf;

use facegate_daemon::store::{DeviceKey, GalleryModel, LiveShard, StoreConfig, StoreError};
use facegate_protocol::{
    AuditEvent, Decision, DeltaBatch, DeltaOp, DeviceId, IdentityId, IdentityRecord, LivenessVerdict, ShardId,
    StageMillis, TemplateRecord,
};

pub const MODEL: &str = "test-embedder-v1";
pub const OTHER_MODEL: &str = "older-embedder-v0";
pub const DIM: usize = 8;

pub fn model() -> GalleryModel {
    GalleryModel { id: MODEL.into(), dim: DIM }
}

/// A database directory and a key file beside it, removed on drop.
pub struct Fixture {
    pub root: tempfile::TempDir,
    pub config: StoreConfig,
    pub key_path: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let key_path = root.path().join("device.key");
        DeviceKey::generate(&key_path).unwrap();
        let config = StoreConfig::new(root.path().join("db"), model());
        Self { root, config, key_path }
    }

    pub fn key(&self) -> DeviceKey {
        DeviceKey::load(&self.key_path).unwrap()
    }

    /// Opens the database. A reopen right after a drop may find it still
    /// locked: sled hands segment writes to background threads that keep
    /// the database file (and its lock) open until they finish, so the
    /// lock outlives the last handle by a moment; that is retried briefly.
    pub fn open(&self) -> LiveShard {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match LiveShard::open(&self.config, self.key()) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                result => return result.unwrap(),
            }
        }
    }
}

/// xorshift64*: deterministic, no extra crates.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A unit template of `model` derived from `seed`.
pub fn template_of(model: &str, seed: u64) -> TemplateRecord {
    let mut rng = Rng::new(seed);
    let mut v: Vec<f32> = (0..DIM).map(|_| (rng.below(2001) as f32 - 1000.0) / 1000.0 + 1e-3).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    TemplateRecord { model_id: model.into(), vector: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
}

pub fn template(seed: u64) -> TemplateRecord {
    template_of(MODEL, seed)
}

pub fn id(name: &str) -> IdentityId {
    IdentityId::new(name).unwrap()
}

pub fn shard(name: &str) -> ShardId {
    ShardId::new(name).unwrap()
}

pub fn record(name: &str, version: u64) -> IdentityRecord {
    IdentityRecord {
        id: id(name),
        name: format!("Person {name}"),
        valid_from: None,
        valid_until: None,
        version,
        offline_access: false,
    }
}

pub fn upsert(name: &str, version: u64, templates: Vec<TemplateRecord>) -> DeltaOp {
    DeltaOp::Upsert { identity: record(name, version), templates }
}

pub fn remove(name: &str) -> DeltaOp {
    DeltaOp::Remove { identity: id(name) }
}

pub fn delta(shard_name: &str, base_seq: u64, seq: u64, ops: Vec<DeltaOp>) -> DeltaBatch {
    DeltaBatch { shard: shard(shard_name), epoch: 1, base_seq, seq, ops }
}

/// An audit event whose `reason` carries `tag`; its seq is assigned by the store.
pub fn audit_event(tag: u64) -> AuditEvent {
    AuditEvent {
        device: DeviceId::new("kiosk-test").unwrap(),
        epoch: 0,
        seq: 0,
        at: 1_700_000_000_000 + tag as i64,
        decision: Decision::Grant,
        identity: Some(id("alice")),
        score: Some(0.97),
        liveness: LivenessVerdict::Live,
        liveness_score: Some(0.9),
        reason: Some(format!("tag {tag}")),
        model_id: MODEL.into(),
        frames: 3,
        timings_ms: StageMillis::default(),
    }
}
