//! Exact search with the kiosk's matcher.

use facegate_face::{Gallery, Match, Template};
use facegate_protocol::IdentityId;

use super::{IndexError, VectorIndex, check};

/// Exact 1:N over one contiguous matrix (`facegate_face::Gallery`).
#[derive(Debug, Clone)]
pub struct ExactIndex {
    gallery: Gallery<IdentityId>,
}

impl ExactIndex {
    pub fn new(model_id: &str, dim: usize) -> Self {
        Self { gallery: Gallery::new(model_id, dim) }
    }

    /// Adds a template without removing earlier ones (bulk loading).
    pub fn insert(&mut self, identity: IdentityId, template: &Template) -> Result<(), IndexError> {
        check(self.gallery.model_id(), self.gallery.dim(), template)?;
        self.gallery.insert(identity, template)?;
        Ok(())
    }

    pub fn reserve(&mut self, rows: usize) {
        self.gallery.reserve(rows);
    }
}

impl VectorIndex for ExactIndex {
    fn kind(&self) -> &'static str {
        "exact"
    }

    fn model_id(&self) -> &str {
        self.gallery.model_id()
    }

    fn dim(&self) -> usize {
        self.gallery.dim()
    }

    fn replace(&mut self, identity: &IdentityId, templates: &[Template]) -> Result<(), IndexError> {
        for t in templates {
            check(self.gallery.model_id(), self.gallery.dim(), t)?;
        }
        self.gallery.remove(identity);
        for t in templates {
            self.gallery.insert(identity.clone(), t)?;
        }
        Ok(())
    }

    fn remove(&mut self, identity: &IdentityId) -> bool {
        self.gallery.remove(identity) > 0
    }

    fn search(&self, query: &Template, k: usize) -> Result<Vec<Match<IdentityId>>, IndexError> {
        check(self.gallery.model_id(), self.gallery.dim(), query)?;
        Ok(self.gallery.search(query, k)?)
    }

    fn templates(&self) -> usize {
        self.gallery.len()
    }

    fn identities(&self) -> usize {
        self.gallery.identities()
    }

    fn contains(&self, identity: &IdentityId) -> bool {
        self.gallery.contains(identity)
    }
}
