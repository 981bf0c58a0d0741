//! Exact 1:N search over one contiguous template matrix, and 1:1 compare.
//!
//! Every row is stored twice: as f32 (the exact vector) and as int8 codes with
//! a per-row scale. A query first scans the int8 codes — a quarter of the
//! memory traffic, which is what bounds a 100k-row scan — and then rescores in
//! f32 every row that could still be in the top k. Which rows could is decided
//! by a proven error bound, not a guess: for unit vectors q and x with int8
//! reconstructions q̂ and x̂ (residuals r_q = ‖q − q̂‖, r_x = ‖x − x̂‖),
//! |q̂·x̂ − q·x| ≤ r_q‖x̂‖ + r_x ≤ r_q(1 + r_x) + r_x. So the result is the
//! exact top k of the f32 scan (`search_exhaustive`, kept as the oracle).

use std::collections::HashMap;
use std::hash::Hash;

use crate::error::FaceError;
use crate::template::Template;

mod kernel;

/// Float rounding allowance added to every bound.
const ROUNDING: f32 = 1e-5;

/// Dot product, written with independent accumulators so the compiler emits
/// SIMD for it on every target.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

pub use kernel::dot_i8;

/// Symmetric int8 quantization of `v` into `codes`: returns the scale and the
/// residual norm ‖v − scale·codes‖.
fn quantize(v: &[f32], codes: &mut [i8]) -> (f32, f32) {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let mut residual = 0.0f32;
    for (c, x) in codes.iter_mut().zip(v) {
        let q = (x / scale).round().clamp(-127.0, 127.0);
        *c = q as i8;
        let e = x - q * scale;
        residual += e * e;
    }
    (scale, residual.sqrt())
}

/// One search result: an identity and its best score over its templates.
#[derive(Debug, Clone, PartialEq)]
pub struct Match<L> {
    pub label: L,
    pub score: f32,
}

/// A gallery of unit templates of one model, several per label allowed.
#[derive(Debug, Clone)]
pub struct Gallery<L> {
    model_id: String,
    dim: usize,
    vectors: Vec<f32>,
    codes: Vec<i8>,
    scales: Vec<f32>,
    residuals: Vec<f32>,
    row_label: Vec<u32>,
    labels: Vec<L>,
    index: HashMap<L, u32>,
}

impl<L: Clone + Eq + Hash> Gallery<L> {
    pub fn new(model_id: impl Into<String>, dim: usize) -> Self {
        Self {
            model_id: model_id.into(),
            dim,
            vectors: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            residuals: Vec::new(),
            row_label: Vec::new(),
            labels: Vec::new(),
            index: HashMap::new(),
        }
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.row_label.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row_label.is_empty()
    }

    /// Number of distinct labels.
    pub fn identities(&self) -> usize {
        self.labels.len()
    }

    pub fn contains(&self, label: &L) -> bool {
        self.index.contains_key(label)
    }

    /// Reserves room for `rows` more templates.
    pub fn reserve(&mut self, rows: usize) {
        self.vectors.reserve(rows * self.dim);
        self.codes.reserve(rows * self.dim);
        self.scales.reserve(rows);
        self.residuals.reserve(rows);
        self.row_label.reserve(rows);
    }

    fn check(&self, template: &Template) -> Result<(), FaceError> {
        if template.model_id != self.model_id {
            return Err(FaceError::ModelMismatch { left: self.model_id.clone(), right: template.model_id.clone() });
        }
        if template.vector.len() != self.dim {
            return Err(FaceError::Dimension {
                model: self.model_id.clone(),
                expected: self.dim,
                actual: template.vector.len(),
            });
        }
        Ok(())
    }

    /// Adds a template for `label`.
    pub fn insert(&mut self, label: L, template: &Template) -> Result<(), FaceError> {
        self.check(template)?;
        let slot = match self.index.get(&label) {
            Some(&slot) => slot,
            None => {
                let slot = self.labels.len() as u32;
                self.labels.push(label.clone());
                self.index.insert(label, slot);
                slot
            }
        };
        let start = self.codes.len();
        self.codes.resize(start + self.dim, 0);
        let (scale, residual) = quantize(&template.vector, &mut self.codes[start..]);
        self.vectors.extend_from_slice(&template.vector);
        self.scales.push(scale);
        self.residuals.push(residual);
        self.row_label.push(slot);
        Ok(())
    }

    /// Removes every template of `label`; returns how many there were.
    pub fn remove(&mut self, label: &L) -> usize {
        let Some(slot) = self.index.remove(label) else {
            return 0;
        };
        let mut removed = 0;
        let mut row = 0;
        while row < self.row_label.len() {
            if self.row_label[row] == slot {
                self.swap_remove_row(row);
                removed += 1;
            } else {
                row += 1;
            }
        }
        let last = (self.labels.len() - 1) as u32;
        self.labels.swap_remove(slot as usize);
        if slot != last {
            for owner in self.row_label.iter_mut().filter(|o| **o == last) {
                *owner = slot;
            }
            self.index.insert(self.labels[slot as usize].clone(), slot);
        }
        removed
    }

    fn swap_remove_row(&mut self, row: usize) {
        let last = self.row_label.len() - 1;
        let d = self.dim;
        if row != last {
            self.vectors.copy_within(last * d..(last + 1) * d, row * d);
            self.codes.copy_within(last * d..(last + 1) * d, row * d);
        }
        self.vectors.truncate(last * d);
        self.codes.truncate(last * d);
        self.scales.swap_remove(row);
        self.residuals.swap_remove(row);
        self.row_label.swap_remove(row);
    }

    /// The best score of `label`'s templates against `query` (1:1 verify).
    /// `None` when the label has no template.
    pub fn verify(&self, label: &L, query: &Template) -> Result<Option<f32>, FaceError> {
        self.check(query)?;
        let Some(&slot) = self.index.get(label) else {
            return Ok(None);
        };
        let best = self
            .row_label
            .iter()
            .enumerate()
            .filter(|(_, owner)| **owner == slot)
            .map(|(row, _)| dot(&query.vector, self.row(row)))
            .fold(None, |best: Option<f32>, s| Some(best.map_or(s, |b| b.max(s))));
        Ok(best)
    }

    fn row(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dim..(row + 1) * self.dim]
    }

    /// The `k` best labels for `query`, best first, exactly as the f32 scan
    /// would rank them, using the int8 scan to skip rows that cannot matter.
    pub fn search(&self, query: &Template, k: usize) -> Result<Vec<Match<L>>, FaceError> {
        self.check(query)?;
        if k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.dim;
        let mut query_codes = vec![0i8; d];
        let (query_scale, query_residual) = quantize(&query.vector, &mut query_codes);
        // Approximate score and its error bound for every row; the lower bound
        // of each label is its best row's approximate score minus that bound.
        let mut dots = Vec::with_capacity(self.len());
        kernel::scan_i8(&query_codes, &self.codes, d, &mut dots);
        let mut approx = Vec::with_capacity(self.len());
        let mut label_floor = vec![f32::NEG_INFINITY; self.labels.len()];
        for (row, &dot) in dots.iter().enumerate() {
            let a = dot as f32 * query_scale * self.scales[row];
            let r = self.residuals[row];
            let bound = query_residual * (1.0 + r) + r + ROUNDING;
            approx.push((a, bound));
            let floor = &mut label_floor[self.row_label[row] as usize];
            *floor = floor.max(a - bound);
        }
        // The k-th best label floor: no row scoring below it can be in the top k.
        let k = k.min(self.labels.len());
        let cut = {
            let mut floors = label_floor;
            let (_, kth, _) = floors.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            *kth
        };
        let mut best: HashMap<u32, f32> = HashMap::new();
        for (row, &(a, bound)) in approx.iter().enumerate() {
            if a + bound < cut {
                continue;
            }
            let exact = dot(&query.vector, self.row(row));
            let entry = best.entry(self.row_label[row]).or_insert(f32::NEG_INFINITY);
            *entry = entry.max(exact);
        }
        Ok(self.top_k(best.into_iter(), k))
    }

    /// The plain f32 scan over every row: the reference `search` must equal.
    pub fn search_exhaustive(&self, query: &Template, k: usize) -> Result<Vec<Match<L>>, FaceError> {
        self.check(query)?;
        let mut best = vec![f32::NEG_INFINITY; self.labels.len()];
        for (row, vector) in self.vectors.chunks_exact(self.dim).enumerate() {
            let s = dot(&query.vector, vector);
            let b = &mut best[self.row_label[row] as usize];
            *b = b.max(s);
        }
        let k = k.min(self.labels.len());
        Ok(self.top_k(best.into_iter().enumerate().map(|(slot, s)| (slot as u32, s)), k))
    }

    fn top_k(&self, scores: impl Iterator<Item = (u32, f32)>, k: usize) -> Vec<Match<L>> {
        let mut all: Vec<(u32, f32)> = scores.collect();
        // Ties broken by label slot so results are deterministic.
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all.into_iter().map(|(slot, score)| Match { label: self.labels[slot as usize].clone(), score }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random unit vectors (xorshift), no extra crates.
    pub(crate) fn random_unit(seed: &mut u64, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        crate::template::normalize(&mut v);
        v
    }

    fn template(v: Vec<f32>) -> Template {
        Template { model_id: "m".into(), vector: v }
    }

    #[test]
    fn dot_matches_a_naive_sum_for_odd_lengths() {
        let mut seed = 7;
        for n in [1, 7, 8, 9, 128, 131] {
            let a = random_unit(&mut seed, n);
            let b = random_unit(&mut seed, n);
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-5);
        }
        let a: Vec<i8> = (0..131).map(|i| (i % 255 - 127) as i8).collect();
        let naive: i32 = a.iter().map(|&x| i32::from(x) * i32::from(x)).sum();
        assert_eq!(dot_i8(&a, &a), naive);
    }

    #[test]
    fn search_equals_the_exhaustive_scan() {
        let mut seed = 42;
        let mut gallery = Gallery::new("m", 128);
        for id in 0..3000u32 {
            gallery.insert(id % 2000, &template(random_unit(&mut seed, 128))).unwrap();
        }
        for _ in 0..50 {
            let q = template(random_unit(&mut seed, 128));
            for k in [1, 5, 20] {
                assert_eq!(gallery.search(&q, k).unwrap(), gallery.search_exhaustive(&q, k).unwrap());
            }
        }
    }

    #[test]
    fn near_duplicates_are_ranked_exactly() {
        // Rows closer to each other than the int8 error: the bound must still
        // send all of them to the f32 rescoring.
        let mut seed = 3;
        let base = random_unit(&mut seed, 128);
        let mut gallery = Gallery::new("m", 128);
        for id in 0..200u32 {
            let mut v = base.clone();
            v[id as usize % 128] += 1e-4 * id as f32;
            crate::template::normalize(&mut v);
            gallery.insert(id, &template(v)).unwrap();
        }
        let q = template(base);
        assert_eq!(gallery.search(&q, 3).unwrap(), gallery.search_exhaustive(&q, 3).unwrap());
    }

    #[test]
    fn best_template_of_a_label_wins_and_labels_are_distinct() {
        let mut g = Gallery::new("m", 2);
        g.insert("a", &template(vec![1.0, 0.0])).unwrap();
        g.insert("a", &template(vec![0.0, 1.0])).unwrap();
        g.insert("b", &template(vec![0.6, 0.8])).unwrap();
        let q = template(vec![0.0, 1.0]);
        let found = g.search(&q, 5).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0], Match { label: "a", score: 1.0 });
        assert_eq!(found[1].label, "b");
        assert_eq!(g.verify(&"b", &q).unwrap(), Some(0.8));
        assert_eq!(g.verify(&"c", &q).unwrap(), None);
    }

    #[test]
    fn remove_forgets_every_template_of_a_label() {
        let mut seed = 9;
        let mut g = Gallery::new("m", 16);
        for id in 0..40u32 {
            g.insert(id % 10, &template(random_unit(&mut seed, 16))).unwrap();
        }
        assert_eq!(g.remove(&3), 4);
        assert_eq!(g.remove(&3), 0);
        assert_eq!((g.len(), g.identities()), (36, 9));
        let q = template(random_unit(&mut seed, 16));
        let all = g.search(&q, 100).unwrap();
        assert!(all.iter().all(|m| m.label != 3));
        assert_eq!(all, g.search_exhaustive(&q, 100).unwrap());
    }

    #[test]
    fn wrong_model_or_dimension_is_refused() {
        let mut g: Gallery<u32> = Gallery::new("m", 4);
        let other = Template { model_id: "x".into(), vector: vec![1.0, 0.0, 0.0, 0.0] };
        assert!(matches!(g.insert(1, &other), Err(FaceError::ModelMismatch { .. })));
        let short = template(vec![1.0, 0.0]);
        assert!(matches!(g.search(&short, 1), Err(FaceError::Dimension { .. })));
    }
}
