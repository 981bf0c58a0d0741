//! The master index as the server holds it: rebuilt from MongoDB at start,
//! updated by this replica's own writes at once, and following every other
//! replica's writes through the change log.
//!
//! Following works on any MongoDB-protocol server: poll `changes` for
//! sequence numbers past the last one applied and reload the named
//! identities' templates. (Change streams would only shorten the delay; the
//! test database does not implement them, so polling is the baseline.)
//! Change-log sequence numbers are taken inside the writing transaction, so
//! entries become visible in order; a hole means a writer has not committed
//! yet and the follower waits for it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use facegate_face::{Match, Template};
use facegate_protocol::IdentityId;
use tokio::sync::Mutex;

use crate::config::IndexKind;
use crate::index::{ExactIndex, HnswIndex, HnswParams, IndexError, VectorIndex};
use crate::store::{CHANGES_COUNTER, ChangeOp, Store, StoreError, TemplateDoc};

/// A hole in the change log older than this is skipped (a writer that died
/// between taking the number and committing cannot leave one, but never
/// stall forever).
const GAP_PATIENCE: Duration = Duration::from_secs(30);

/// Templates read from MongoDB per request while rebuilding.
const REBUILD_PAGE: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("template {template} of {identity} is malformed: {message}")]
    BadTemplate { template: String, identity: String, message: String },
    #[error("the index lock is poisoned (a panic while updating it)")]
    Poisoned,
}

/// How the index was built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RebuildStats {
    pub templates: usize,
    pub identities: usize,
    pub seconds: f64,
    pub kind: &'static str,
    /// Change-log position the index reflects.
    pub seq: i64,
}

/// The in-memory master index and its position in the change log.
#[derive(Debug)]
pub struct MasterIndex {
    model_id: String,
    dim: usize,
    kind: IndexKind,
    hnsw_above: usize,
    params: HnswParams,
    index: RwLock<Box<dyn VectorIndex>>,
    applied: AtomicI64,
    /// Serialises (read DB state → apply) so an older state never overwrites a newer one.
    writer: Mutex<()>,
    gap: std::sync::Mutex<Option<(i64, Instant)>>,
}

/// A stored template as a face template.
pub fn template_of(doc: &TemplateDoc, dim: usize) -> Result<Template, MasterError> {
    Template::from_vector_bytes(doc.model_id.clone(), &doc.vector.bytes, dim).map_err(|e| MasterError::BadTemplate {
        template: doc.id.clone(),
        identity: doc.identity.clone(),
        message: e.to_string(),
    })
}

fn identity_id(raw: &str) -> Result<IdentityId, MasterError> {
    IdentityId::new(raw).map_err(|e| MasterError::Store(StoreError::Corrupt(e.to_string())))
}

impl MasterIndex {
    pub fn new(model_id: &str, dim: usize, kind: IndexKind, hnsw_above: usize, params: HnswParams) -> Self {
        Self {
            model_id: model_id.to_string(),
            dim,
            kind,
            hnsw_above,
            params,
            index: RwLock::new(Box::new(ExactIndex::new(model_id, dim))),
            applied: AtomicI64::new(0),
            writer: Mutex::new(()),
            gap: std::sync::Mutex::new(None),
        }
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The change-log position the index reflects.
    pub fn applied_seq(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    /// (templates, identities, kind).
    pub fn size(&self) -> (usize, usize, &'static str) {
        match self.index.read() {
            Ok(i) => (i.templates(), i.identities(), i.kind()),
            Err(_) => (0, 0, "poisoned"),
        }
    }

    fn use_hnsw(&self, templates: usize) -> bool {
        match self.kind {
            IndexKind::Exact => false,
            IndexKind::Hnsw => true,
            IndexKind::Auto => templates > self.hnsw_above,
        }
    }

    /// Loads every template from the database and swaps the new index in.
    /// The change-log head is read first, so anything committed later is
    /// picked up by [`catch_up`](Self::catch_up).
    pub async fn rebuild(&self, store: &Store) -> Result<RebuildStats, MasterError> {
        self.rebuild_in_pages(store, REBUILD_PAGE).await
    }

    /// [`Self::rebuild`], reading `page` templates per request (tests use
    /// small pages to take the multi-page path on small galleries).
    #[doc(hidden)]
    pub async fn rebuild_in_pages(&self, store: &Store, page: usize) -> Result<RebuildStats, MasterError> {
        let _writer = self.writer.lock().await;
        let started = Instant::now();
        let head = store.counter(CHANGES_COUNTER).await?;
        let mut rows: Vec<(IdentityId, Template)> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let docs = store.templates_page(&self.model_id, after.as_deref(), page).await?;
            for doc in &docs {
                rows.push((identity_id(&doc.identity)?, template_of(doc, self.dim)?));
            }
            match docs.last() {
                Some(last) if docs.len() >= page => after = Some(last.id.clone()),
                _ => break,
            }
        }
        let hnsw = self.use_hnsw(rows.len());
        let (model_id, dim, params) = (self.model_id.clone(), self.dim, self.params);
        let built: Box<dyn VectorIndex> =
            tokio::task::spawn_blocking(move || -> Result<Box<dyn VectorIndex>, IndexError> {
                if hnsw {
                    let mut index = HnswIndex::new(&model_id, dim, rows.len(), params);
                    index.insert_bulk(rows)?;
                    Ok(Box::new(index))
                } else {
                    let mut index = ExactIndex::new(&model_id, dim);
                    index.reserve(rows.len());
                    for (id, t) in rows {
                        index.insert(id, &t)?;
                    }
                    Ok(Box::new(index))
                }
            })
            .await
            .map_err(|_| MasterError::Poisoned)??;
        let stats = RebuildStats {
            templates: built.templates(),
            identities: built.identities(),
            seconds: started.elapsed().as_secs_f64(),
            kind: built.kind(),
            seq: head,
        };
        *self.index.write().map_err(|_| MasterError::Poisoned)? = built;
        self.applied.store(head, Ordering::Release);
        Ok(stats)
    }

    /// Applies every change-log entry past the applied position (other
    /// replicas' writes, the bulk importer's, and our own again, harmlessly).
    /// Returns how many entries were applied.
    pub async fn catch_up(&self, store: &Store) -> Result<usize, MasterError> {
        let _writer = self.writer.lock().await;
        let mut total = 0;
        loop {
            let applied = self.applied.load(Ordering::Acquire);
            let changes = store.changes_after(applied, 1000).await?;
            if changes.is_empty() {
                return Ok(total);
            }
            let mut expected = applied + 1;
            let mut contiguous = Vec::new();
            for c in &changes {
                if c.seq != expected {
                    if !self.patient_with_gap(expected) {
                        break;
                    }
                    log::warn!(seq = expected; "change log hole outlived its writer; skipping it");
                }
                contiguous.push(c);
                expected = c.seq + 1;
            }
            if contiguous.is_empty() {
                return Ok(total);
            }
            let mut last = applied;
            let mut stalled = false;
            for c in &contiguous {
                let id = identity_id(&c.identity)?;
                // A forgotten identity never comes back (ids are never
                // reused): drop it without reading what a reader may still
                // see of it mid-commit.
                let docs = match c.op {
                    ChangeOp::Remove => Vec::new(),
                    ChangeOp::Upsert => store.templates_of(&c.identity, &self.model_id).await?,
                };
                // An identity always has a template, so an Upsert that shows
                // none is either forgotten since (a later Remove says so) or
                // not wholly visible yet: servers whose commits are not
                // atomic to readers (jongodb 0.1.6) show the change-log entry
                // before the templates. Wait for it like for a hole.
                if c.op == ChangeOp::Upsert && docs.is_empty() && !store.removed_after(&c.identity, c.seq).await? {
                    if !self.patient_with_gap(c.seq) {
                        stalled = true;
                        break;
                    }
                    log::warn!(seq = c.seq, identity = c.identity.as_str(); "change names an identity without templates; skipping it");
                }
                let templates = docs.iter().map(|d| template_of(d, self.dim)).collect::<Result<Vec<_>, _>>()?;
                self.index.write().map_err(|_| MasterError::Poisoned)?.replace(&id, &templates)?;
                last = c.seq;
                total += 1;
            }
            self.applied.store(last, Ordering::Release);
            if stalled || contiguous.len() < changes.len() {
                return Ok(total);
            }
        }
    }

    /// True once a hole at `seq` has been waited on long enough.
    fn patient_with_gap(&self, seq: i64) -> bool {
        let Ok(mut gap) = self.gap.lock() else {
            return true;
        };
        match *gap {
            Some((s, since)) if s == seq => since.elapsed() >= GAP_PATIENCE,
            _ => {
                *gap = Some((seq, Instant::now()));
                false
            }
        }
    }

    /// Applies this replica's own committed write at once (de-duplication
    /// must see it before the next enrollment).
    pub async fn apply(&self, identity: &IdentityId, templates: &[Template]) -> Result<(), MasterError> {
        let _writer = self.writer.lock().await;
        self.index.write().map_err(|_| MasterError::Poisoned)?.replace(identity, templates)?;
        Ok(())
    }

    pub fn search(&self, query: &Template, k: usize) -> Result<Vec<Match<IdentityId>>, MasterError> {
        Ok(self.index.read().map_err(|_| MasterError::Poisoned)?.search(query, k)?)
    }

    pub fn contains(&self, identity: &IdentityId) -> bool {
        self.index.read().is_ok_and(|i| i.contains(identity))
    }
}

/// Polls the change log every `interval` until `shutdown` resolves.
pub async fn follow(
    index: Arc<MasterIndex>,
    store: Store,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
    on_applied: impl Fn(&MasterIndex) + Send,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        match index.catch_up(&store).await {
            Ok(0) => {}
            Ok(n) => {
                log::debug!(applied = n, seq = index.applied_seq(); "index followed the change log");
                on_applied(&index);
            }
            Err(e) => log::warn!(error:% = e; "following the change log failed; retrying"),
        }
    }
}
