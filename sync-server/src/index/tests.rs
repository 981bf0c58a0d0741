use super::*;

/// Deterministic xorshift noise in [-0.5, 0.5).
fn noise(seed: &mut u64) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

fn unit(v: Vec<f32>) -> Template {
    Template::from_embedding("m", v).unwrap()
}

/// `people` identities, each a random centre with `per` noisy templates,
/// and one fresh noisy probe per person (like several photos of a face).
pub(crate) fn synthetic(
    people: usize,
    per: usize,
    dim: usize,
    seed: u64,
) -> (Vec<(IdentityId, Template)>, Vec<Template>) {
    let mut s = seed | 1;
    let mut rows = Vec::new();
    let mut probes = Vec::new();
    let spread = 0.6 / (dim as f32).sqrt();
    for p in 0..people {
        let centre: Vec<f32> = (0..dim).map(|_| noise(&mut s)).collect();
        let centre = unit(centre).vector;
        let id = IdentityId::new(format!("p{p}")).unwrap();
        for _ in 0..per {
            rows.push((id.clone(), unit(centre.iter().map(|x| x + spread * noise(&mut s)).collect())));
        }
        probes.push(unit(centre.iter().map(|x| x + spread * noise(&mut s)).collect()));
    }
    (rows, probes)
}

fn both(rows: &[(IdentityId, Template)], dim: usize) -> (ExactIndex, HnswIndex) {
    let mut exact = ExactIndex::new("m", dim);
    for (id, t) in rows {
        exact.insert(id.clone(), t).unwrap();
    }
    let mut hnsw = HnswIndex::new("m", dim, rows.len(), HnswParams::default());
    hnsw.insert_bulk(rows.to_vec()).unwrap();
    (exact, hnsw)
}

#[test]
fn hnsw_recall_at_1_matches_exact_search_on_clustered_templates() {
    let (rows, probes) = synthetic(4000, 2, 128, 11);
    let (exact, hnsw) = both(&rows, 128);
    assert_eq!(exact.templates(), hnsw.templates());
    assert_eq!(exact.identities(), hnsw.identities());
    let recall = recall_at_1(&exact, &hnsw, &probes[..500]).unwrap();
    assert!(recall >= 0.98, "recall@1 {recall}");
}

#[test]
fn hnsw_scores_are_exact_similarities_of_the_rows_found() {
    let (rows, probes) = synthetic(300, 2, 32, 5);
    let (exact, hnsw) = both(&rows, 32);
    for q in &probes[..50] {
        let e = exact.search(q, 1).unwrap();
        let h = hnsw.search(q, 1).unwrap();
        if e[0].label == h[0].label {
            assert!((e[0].score - h[0].score).abs() < 1e-4, "{} vs {}", e[0].score, h[0].score);
        }
    }
}

#[test]
fn replace_and_remove_behave_alike_in_both_indexes() {
    let (rows, probes) = synthetic(200, 2, 32, 9);
    let (mut exact, mut hnsw) = both(&rows, 32);
    let victim = rows[0].0.clone();
    assert!(exact.remove(&victim));
    assert!(hnsw.remove(&victim));
    assert!(!hnsw.remove(&victim));
    assert!(!exact.contains(&victim) && !hnsw.contains(&victim));
    let found = hnsw.search(&probes[0], 5).unwrap();
    assert!(found.iter().all(|m| m.label != victim));
    // Re-adding under another identity: the probe now finds the newcomer.
    let newcomer = IdentityId::new("newcomer").unwrap();
    exact.replace(&newcomer, &[rows[0].1.clone()]).unwrap();
    hnsw.replace(&newcomer, &[rows[0].1.clone()]).unwrap();
    assert_eq!(exact.search(&probes[0], 1).unwrap()[0].label, newcomer);
    assert_eq!(hnsw.search(&probes[0], 1).unwrap()[0].label, newcomer);
    assert_eq!(exact.templates(), hnsw.templates());
    assert!(hnsw.tombstone_ratio() > 0.0);
    // Replacing with nothing removes.
    hnsw.replace(&newcomer, &[]).unwrap();
    exact.replace(&newcomer, &[]).unwrap();
    assert!(!hnsw.contains(&newcomer) && !exact.contains(&newcomer));
}

#[test]
fn wrong_model_or_dimension_is_refused_by_both() {
    let mut exact = ExactIndex::new("m", 4);
    let mut hnsw = HnswIndex::new("m", 4, 10, HnswParams::default());
    let other = Template { model_id: "x".into(), vector: vec![1.0, 0.0, 0.0, 0.0] };
    let id = IdentityId::new("a").unwrap();
    assert!(matches!(exact.replace(&id, std::slice::from_ref(&other)), Err(IndexError::Model { .. })));
    assert!(matches!(hnsw.replace(&id, std::slice::from_ref(&other)), Err(IndexError::Model { .. })));
    let short = Template { model_id: "m".into(), vector: vec![1.0, 0.0] };
    assert!(matches!(hnsw.search(&short, 1), Err(IndexError::Dimension { .. })));
    assert!(matches!(exact.search(&short, 1), Err(IndexError::Dimension { .. })));
}

#[test]
fn an_empty_index_finds_nothing() {
    let hnsw = HnswIndex::new("m", 4, 10, HnswParams::default());
    let q = unit(vec![1.0, 0.0, 0.0, 0.0]);
    assert!(hnsw.search(&q, 3).unwrap().is_empty());
    assert!(ExactIndex::new("m", 4).search(&q, 3).unwrap().is_empty());
}
