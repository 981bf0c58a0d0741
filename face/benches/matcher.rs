//! Guards 1:N search latency over 1k, 10k and 100k templates: the int8 scan
//! with exact rescoring against the plain f32 scan it must equal.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use facegate_face::{Gallery, Template};

fn random_templates(count: usize, seed: &mut u64) -> Vec<Template> {
    (0..count)
        .map(|_| {
            let v = (0..128)
                .map(|_| {
                    *seed ^= *seed << 13;
                    *seed ^= *seed >> 7;
                    *seed ^= *seed << 17;
                    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect();
            Template::from_embedding("bench", v).unwrap()
        })
        .collect()
}

fn search(c: &mut Criterion) {
    let mut seed = 0x5eed;
    let queries = random_templates(64, &mut seed);
    let mut group = c.benchmark_group("search_top5");
    for size in [1_000usize, 10_000, 100_000] {
        let mut gallery = Gallery::new("bench", 128);
        gallery.reserve(size);
        for (id, t) in random_templates(size, &mut seed).iter().enumerate() {
            gallery.insert(id as u32, t).unwrap();
        }
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("int8+rescore", size), &gallery, |b, g| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                g.search(&queries[i], 5).unwrap()
            })
        });
        group.bench_with_input(BenchmarkId::new("f32-exhaustive", size), &gallery, |b, g| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                g.search_exhaustive(&queries[i], 5).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = search
}
criterion_main!(benches);
