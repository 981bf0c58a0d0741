//! Scale check of the gallery store, run by hand (ignored by default):
//! builds a 100k-template shard, then opens it in a fresh process with
//! `facegate-daemon gallery stats` and prints its open time and resident
//! memory.
//!
//! `cargo test --release -p facegate-daemon --test store_scale -- --ignored --nocapture`
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Instant;

use facegate_daemon::store::{DeviceKey, GalleryModel, GalleryStore, LiveShard, StoreConfig};
use facegate_protocol::{IdentityId, IdentityRecord, ShardId, SnapshotEntry, TemplateRecord};

const TEMPLATES: usize = 100_000;

fn unit_template(seed: &mut u64) -> TemplateRecord {
    let mut v: Vec<f32> = (0..128)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    TemplateRecord { model_id: "dlib-resnet29-v1".into(), vector: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
}

#[test]
#[ignore = "builds a 100k-template database; run by hand in release"]
fn a_100k_template_shard_opens_in_a_fresh_process_and_reports_time_and_memory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("gallery");
    std::fs::create_dir(&dir).unwrap();
    let key_path = dir.join("device.key");
    DeviceKey::generate(&key_path).unwrap();
    let config = StoreConfig::new(&dir, GalleryModel { id: "dlib-resnet29-v1".into(), dim: 128 });
    let started = Instant::now();
    {
        let shard = LiveShard::open(&config, DeviceKey::load(&key_path).unwrap()).unwrap();
        let mut seed = 42;
        let entries: Vec<SnapshotEntry> = (0..TEMPLATES)
            .map(|i| SnapshotEntry {
                identity: IdentityRecord {
                    id: IdentityId::new(format!("person-{i:06}")).unwrap(),
                    name: format!("Person {i}"),
                    valid_from: None,
                    valid_until: None,
                    version: 1,
                    offline_access: false,
                },
                templates: vec![unit_template(&mut seed)],
            })
            .collect();
        shard.apply_snapshot(&ShardId::new("site").unwrap(), 1, &entries).unwrap();
    }
    eprintln!("built {TEMPLATES} templates in {:.1} s", started.elapsed().as_secs_f64());
    for run in 0..3 {
        let out = Command::new(env!("CARGO_BIN_EXE_facegate-daemon"))
            .args(["gallery", "stats", "--db"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(stats["templates"].as_u64(), Some(TEMPLATES as u64));
        eprintln!(
            "run {run}: open {:.0} ms (sled {:.0} ms), VmRSS {:.1} MiB, db {:.1} MiB",
            stats["open_ms"].as_f64().unwrap(),
            stats["store_open_ms"].as_f64().unwrap(),
            stats["rss_bytes"].as_f64().unwrap() / 1048576.0,
            stats["db_bytes"].as_f64().unwrap() / 1048576.0
        );
    }
}
