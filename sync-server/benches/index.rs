//! Guards de-duplication search latency of the master index (exact scan and
//! HNSW) at gallery sizes up to 1M templates, and HNSW recall@1 against exact.
//!
//! `cargo bench -p facegate-sync-server --bench index` measures 100k and 1M
//! (set `FACEGATE_BENCH_SIZES=100000` to skip 1M: building that HNSW takes
//! minutes on 2 cores). Under `cargo test` it runs once on 2k templates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use facegate_face::Template;
use facegate_protocol::IdentityId;
use facegate_sync_server::index::{ExactIndex, HnswIndex, HnswParams, VectorIndex, recall_at_1};

fn noise(seed: &mut u64) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

/// Clustered synthetic templates: one random centre per person, each
/// template a noisy copy (two per person), and one probe per person.
fn data(templates: usize) -> (Vec<(IdentityId, Template)>, Vec<Template>) {
    let dim = 128;
    let spread = 0.6 / (dim as f32).sqrt();
    let mut s = 0x2545_f491_4f6c_dd1d_u64;
    let mut rows = Vec::with_capacity(templates);
    let mut probes = Vec::new();
    let people = templates / 2;
    for p in 0..people {
        let centre = Template::from_embedding("m", (0..dim).map(|_| noise(&mut s)).collect()).unwrap().vector;
        let id = IdentityId::new(format!("p{p}")).unwrap();
        for _ in 0..2 {
            let v = centre.iter().map(|x| x + spread * noise(&mut s)).collect();
            rows.push((id.clone(), Template::from_embedding("m", v).unwrap()));
        }
        if probes.len() < 1000 {
            probes.push(
                Template::from_embedding("m", centre.iter().map(|x| x + spread * noise(&mut s)).collect()).unwrap(),
            );
        }
    }
    (rows, probes)
}

fn sizes() -> Vec<usize> {
    let benching = std::env::args().any(|a| a == "--bench");
    if !benching {
        return vec![2000];
    }
    std::env::var("FACEGATE_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000])
}

fn bench(c: &mut Criterion) {
    for n in sizes() {
        let (rows, probes) = data(n);
        let started = Instant::now();
        let mut exact = ExactIndex::new("m", 128);
        exact.reserve(rows.len());
        for (id, t) in &rows {
            exact.insert(id.clone(), t).unwrap();
        }
        let exact_build = started.elapsed();
        let started = Instant::now();
        let mut hnsw = HnswIndex::new("m", 128, rows.len(), HnswParams::default());
        hnsw.insert_bulk(rows.clone()).unwrap();
        let hnsw_build = started.elapsed();
        let recall = recall_at_1(&exact, &hnsw, &probes).unwrap();
        eprintln!(
            "n={n}: exact load {:.2} s, HNSW build {:.1} s (M=16, ef_construction=100, all cores), HNSW recall@1 {:.4} over {} probes",
            exact_build.as_secs_f64(),
            hnsw_build.as_secs_f64(),
            recall,
            probes.len()
        );
        let mut group = c.benchmark_group(format!("dedup_search_{n}"));
        group.sample_size(20);
        let mut i = 0;
        group.bench_function("exact_top5", |b| {
            b.iter(|| {
                i = (i + 1) % probes.len();
                black_box(exact.search(&probes[i], 5).unwrap())
            })
        });
        for ef in [64, 128] {
            hnsw.set_ef_search(ef);
            let recall = recall_at_1(&exact, &hnsw, &probes).unwrap();
            eprintln!("n={n}: HNSW ef_search={ef} recall@1 {recall:.4}");
            group.bench_function(format!("hnsw_top5_ef{ef}"), |b| {
                b.iter(|| {
                    i = (i + 1) % probes.len();
                    black_box(hnsw.search(&probes[i], 5).unwrap())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
