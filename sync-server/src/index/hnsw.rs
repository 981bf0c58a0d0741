//! Approximate search: an HNSW graph (`hnsw_rs`).
//!
//! HNSW graphs do not delete. A replaced or removed identity's rows become
//! tombstones, skipped by a search filter; [`HnswIndex::tombstone_ratio`]
//! tells the owner when a rebuild would pay off. Scores are exact cosine
//! similarities of the rows found (the graph only chooses which rows).

use std::collections::{HashMap, HashSet};

use facegate_face::{Match, Template};
use facegate_protocol::IdentityId;
use hnsw_rs::prelude::{Distance, Hnsw};

use super::{IndexError, VectorIndex, check};

/// Cosine distance of unit vectors, `1 − a·b`, clamped at 0. (`hnsw_rs`'s own
/// `DistDot` asserts `a·b ≤ 1`, which float rounding breaks for a vector
/// compared with itself.)
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - facegate_face::matcher::dot(a, b)).max(0.0)
    }
}

/// Graph parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HnswParams {
    /// Links per node and layer (M).
    pub connections: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self { connections: 16, ef_construction: 100, ef_search: 64 }
    }
}

/// HNSW over every template; several rows per identity.
pub struct HnswIndex {
    model_id: String,
    dim: usize,
    params: HnswParams,
    graph: Hnsw<'static, f32, UnitDot>,
    /// Row → owner; `None` once tombstoned.
    rows: Vec<Option<IdentityId>>,
    by_identity: HashMap<IdentityId, Vec<usize>>,
    dead: HashSet<usize>,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("model_id", &self.model_id)
            .field("rows", &self.rows.len())
            .field("dead", &self.dead.len())
            .field("params", &self.params)
            .finish()
    }
}

impl HnswIndex {
    /// An empty graph sized for about `capacity` templates.
    pub fn new(model_id: &str, dim: usize, capacity: usize, params: HnswParams) -> Self {
        let layers = 16;
        let graph =
            Hnsw::new(params.connections.clamp(4, 64), capacity.max(1024), layers, params.ef_construction, UnitDot);
        Self {
            model_id: model_id.to_string(),
            dim,
            params,
            graph,
            rows: Vec::new(),
            by_identity: HashMap::new(),
            dead: HashSet::new(),
        }
    }

    /// Adds templates in bulk, using every core (index rebuild).
    pub fn insert_bulk(&mut self, items: Vec<(IdentityId, Template)>) -> Result<(), IndexError> {
        for (_, t) in &items {
            check(&self.model_id, self.dim, t)?;
        }
        let start = self.rows.len();
        let vectors: Vec<(&[f32], usize)> =
            items.iter().enumerate().map(|(i, (_, t))| (t.vector.as_slice(), start + i)).collect();
        self.graph.parallel_insert_slice(&vectors);
        for (i, (identity, _)) in items.into_iter().enumerate() {
            self.by_identity.entry(identity.clone()).or_default().push(start + i);
            self.rows.push(Some(identity));
        }
        Ok(())
    }

    /// Share of rows that are tombstones.
    pub fn tombstone_ratio(&self) -> f64 {
        if self.rows.is_empty() { 0.0 } else { self.dead.len() as f64 / self.rows.len() as f64 }
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.max(8);
    }

    fn kill(&mut self, identity: &IdentityId) -> bool {
        let Some(rows) = self.by_identity.remove(identity) else {
            return false;
        };
        for row in rows {
            if let Some(slot) = self.rows.get_mut(row) {
                *slot = None;
            }
            self.dead.insert(row);
        }
        true
    }
}

impl VectorIndex for HnswIndex {
    fn kind(&self) -> &'static str {
        "hnsw"
    }

    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn replace(&mut self, identity: &IdentityId, templates: &[Template]) -> Result<(), IndexError> {
        for t in templates {
            check(&self.model_id, self.dim, t)?;
        }
        self.kill(identity);
        for t in templates {
            let row = self.rows.len();
            self.graph.insert_slice((t.vector.as_slice(), row));
            self.rows.push(Some(identity.clone()));
            self.by_identity.entry(identity.clone()).or_default().push(row);
        }
        Ok(())
    }

    fn remove(&mut self, identity: &IdentityId) -> bool {
        self.kill(identity)
    }

    fn search(&self, query: &Template, k: usize) -> Result<Vec<Match<IdentityId>>, IndexError> {
        check(&self.model_id, self.dim, query)?;
        if k == 0 || self.by_identity.is_empty() {
            return Ok(Vec::new());
        }
        // Several rows may belong to one identity: ask for more rows than
        // identities wanted, then keep each identity's best.
        let rows_wanted = (k * 4).max(16);
        let ef = self.params.ef_search.max(rows_wanted);
        let alive = |row: &usize| !self.dead.contains(row);
        let filter: Option<&dyn hnsw_rs::prelude::FilterT> = if self.dead.is_empty() { None } else { Some(&alive) };
        let found = self.graph.search_filter(&query.vector, rows_wanted, ef, filter);
        let mut best: HashMap<&IdentityId, f32> = HashMap::new();
        for n in found {
            let Some(Some(identity)) = self.rows.get(n.d_id) else {
                continue;
            };
            let score = 1.0 - n.distance;
            let entry = best.entry(identity).or_insert(f32::NEG_INFINITY);
            *entry = entry.max(score);
        }
        let mut all: Vec<Match<IdentityId>> =
            best.into_iter().map(|(label, score)| Match { label: label.clone(), score }).collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.label.cmp(&b.label)));
        all.truncate(k);
        Ok(all)
    }

    fn templates(&self) -> usize {
        self.rows.len() - self.dead.len()
    }

    fn identities(&self) -> usize {
        self.by_identity.len()
    }

    fn contains(&self, identity: &IdentityId) -> bool {
        self.by_identity.contains_key(identity)
    }
}
