//! Gallery store costs that bound a kiosk: opening (decrypting) a
//! 100k-template shard at start, applying a 50-op delta (one transaction and
//! an fsync), and appending one audit event (the fsync before the door opens).
//! Under `cargo test` (no `--bench`) the shard has 1k templates so the smoke
//! run stays fast.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use facegate_daemon::store::{DeviceKey, GalleryModel, GalleryStore, LiveShard, StoreConfig};
use facegate_protocol::{
    AuditEvent, Decision, DeltaBatch, DeltaOp, DeviceId, IdentityId, IdentityRecord, LivenessVerdict, ShardId,
    SnapshotEntry, StageMillis, TemplateRecord,
};

const MODEL: &str = "dlib-resnet29-v1";
const DIM: usize = 128;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn template(&mut self) -> TemplateRecord {
        let mut v: Vec<f32> = (0..DIM).map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        TemplateRecord { model_id: MODEL.into(), vector: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
}

fn record(i: usize, version: u64) -> IdentityRecord {
    IdentityRecord {
        id: IdentityId::new(format!("person-{i:06}")).unwrap(),
        name: format!("Person {i}"),
        valid_from: None,
        valid_until: None,
        version,
        offline_access: false,
    }
}

fn audit_event() -> AuditEvent {
    AuditEvent {
        device: DeviceId::new("kiosk-bench").unwrap(),
        epoch: 0,
        seq: 0,
        at: 1_700_000_000_000,
        decision: Decision::Grant,
        identity: Some(IdentityId::new("person-000001").unwrap()),
        score: Some(0.97),
        liveness: LivenessVerdict::Live,
        liveness_score: Some(0.9),
        reason: None,
        model_id: MODEL.into(),
        frames: 3,
        timings_ms: StageMillis::default(),
    }
}

/// A shard of `templates` templates, one identity each, built with snapshots.
fn build(config: &StoreConfig, key_path: &std::path::Path, templates: usize) {
    let shard = LiveShard::open(config, DeviceKey::load(key_path).unwrap()).unwrap();
    let mut rng = Rng(42);
    let entries: Vec<SnapshotEntry> =
        (0..templates).map(|i| SnapshotEntry { identity: record(i, 1), templates: vec![rng.template()] }).collect();
    shard.apply_snapshot(&ShardId::new("site").unwrap(), 1, &entries).unwrap();
}

fn store(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let templates = if full { 100_000 } else { 1_000 };
    let root = tempfile::tempdir().unwrap();
    let key_path = root.path().join("device.key");
    DeviceKey::generate(&key_path).unwrap();
    let config = StoreConfig::new(root.path().join("db"), GalleryModel { id: MODEL.into(), dim: DIM });
    build(&config, &key_path, templates);

    let mut group = c.benchmark_group("store");
    group.sample_size(10).measurement_time(Duration::from_secs(if full { 20 } else { 1 }));
    group.bench_function(format!("open_{templates}_templates"), |b| {
        b.iter(|| LiveShard::open(&config, DeviceKey::load(&key_path).unwrap()).unwrap());
    });

    let shard = LiveShard::open(&config, DeviceKey::load(&key_path).unwrap()).unwrap();
    eprintln!("open report: {:?}", shard.open_report());
    let site = ShardId::new("site").unwrap();
    let mut rng = Rng(7);
    group.sample_size(30);
    group.bench_function("apply_delta_50_ops", |b| {
        b.iter(|| {
            let base_seq = shard.shard_seq(&site).unwrap();
            let ops = (0..50)
                .map(|_| {
                    let i = (rng.next() % templates as u64) as usize;
                    if rng.next().is_multiple_of(5) {
                        DeltaOp::Remove { identity: record(i, 0).id }
                    } else {
                        DeltaOp::Upsert { identity: record(i, base_seq + 1), templates: vec![rng.template()] }
                    }
                })
                .collect();
            shard.apply_delta(&DeltaBatch { shard: site.clone(), epoch: 1, base_seq, seq: base_seq + 1, ops }).unwrap()
        });
    });
    group.bench_function("append_audit", |b| b.iter(|| shard.append_audit(audit_event()).unwrap()));
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
