//! The master vector index: every template of the current model, across all
//! shards, in memory. Used for de-duplication at enrollment and for admin
//! 1:N search.
//!
//! [`VectorIndex`] has two implementations: [`ExactIndex`] (the kiosk's own
//! exact matcher, `facegate_face::Gallery`, SIMD int8 scan with exact f32
//! rescoring) and [`HnswIndex`] (an HNSW graph from `hnsw_rs`, approximate,
//! for galleries where an exact scan gets too slow). Exact search doubles as
//! the oracle the HNSW recall is measured against.

use facegate_face::{Match, Template};
use facegate_protocol::IdentityId;

mod exact;
mod hnsw;

pub use exact::ExactIndex;
pub use hnsw::{HnswIndex, HnswParams, UnitDot};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Face(#[from] facegate_face::FaceError),
    #[error("template of model {found} in an index of model {expected}")]
    Model { expected: String, found: String },
    #[error("template has {found} dimensions, the index {expected}")]
    Dimension { expected: usize, found: usize },
}

/// A searchable set of templates, several per identity.
pub trait VectorIndex: Send + Sync + std::fmt::Debug {
    /// `"exact"` or `"hnsw"`.
    fn kind(&self) -> &'static str;
    fn model_id(&self) -> &str;
    fn dim(&self) -> usize;
    /// Replaces every template of `identity` with `templates` (an empty
    /// slice removes the identity).
    fn replace(&mut self, identity: &IdentityId, templates: &[Template]) -> Result<(), IndexError>;
    /// Forgets `identity`; returns whether it was present.
    fn remove(&mut self, identity: &IdentityId) -> bool;
    /// The `k` best identities for `query` (each scored by its best
    /// template), best first.
    fn search(&self, query: &Template, k: usize) -> Result<Vec<Match<IdentityId>>, IndexError>;
    /// Live templates.
    fn templates(&self) -> usize;
    fn identities(&self) -> usize;
    fn contains(&self, identity: &IdentityId) -> bool;
}

pub(crate) fn check(model_id: &str, dim: usize, t: &Template) -> Result<(), IndexError> {
    if t.model_id != model_id {
        return Err(IndexError::Model { expected: model_id.to_string(), found: t.model_id.clone() });
    }
    if t.vector.len() != dim {
        return Err(IndexError::Dimension { expected: dim, found: t.vector.len() });
    }
    Ok(())
}

/// Recall@1 of `candidate` against `oracle` over `queries`: the fraction of
/// queries whose best identity is the same.
pub fn recall_at_1(
    oracle: &dyn VectorIndex,
    candidate: &dyn VectorIndex,
    queries: &[Template],
) -> Result<f64, IndexError> {
    if queries.is_empty() {
        return Ok(1.0);
    }
    let mut hits = 0usize;
    for q in queries {
        let truth = oracle.search(q, 1)?;
        let found = candidate.search(q, 1)?;
        if truth.first().map(|m| &m.label) == found.first().map(|m| &m.label) {
            hits += 1;
        }
    }
    Ok(hits as f64 / queries.len() as f64)
}

#[cfg(test)]
mod tests;
