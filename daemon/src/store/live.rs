//! The gallery as the matcher sees it: decrypted into one contiguous matrix,
//! kept in step with sled (every change goes to sled first, then here).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use facegate_face::Gallery;
use facegate_protocol::{
    AuditEvent, DeltaBatch, IdentityId, IdentityRecord, ShardId, ShardProgress, SnapshotEntry, TemplateRecord,
};

use super::apply::Changes;
use super::codec;
use super::{
    ApplyReport, DeltaOutcome, DeviceKey, GalleryEntry, GalleryStore, PurgeReport, SnapshotOutcome, Store, StoreConfig,
    StoreError, StoreStats,
};

/// What the matching thread reads: the template matrix and the records.
#[derive(Debug)]
pub struct GalleryView {
    /// Every template of the device's model, labelled by identity.
    pub gallery: Gallery<IdentityId>,
    /// Every identity (also those without a template of the device's model).
    pub identities: HashMap<IdentityId, IdentityRecord>,
}

/// How long opening took and what was loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenReport {
    pub identities: usize,
    pub templates: usize,
    /// Opening sled and checking the key and layout.
    pub store_open: Duration,
    /// Everything: sled, decryption and building the matrix.
    pub elapsed: Duration,
}

/// The store and its decrypted in-memory gallery, never diverging: a change
/// is committed and flushed to sled first, then applied to the matrix under
/// the write lock (held only for the matrix update, not the fsync). Readers
/// see the gallery before or after a change, never during one.
#[derive(Debug)]
pub struct LiveShard {
    store: Store,
    view: RwLock<GalleryView>,
    /// Keeps sled order and matrix order the same when writers race.
    writer: Mutex<()>,
    report: OpenReport,
}

impl LiveShard {
    /// Opens the store and loads the gallery; see [`Store::open`].
    pub fn open(config: &StoreConfig, key: DeviceKey) -> Result<Self, StoreError> {
        let started = Instant::now();
        let store = Store::open(config, key)?;
        let store_open = started.elapsed();
        let mut shard = Self::from_store(store)?;
        shard.report.store_open = store_open;
        shard.report.elapsed = started.elapsed();
        Ok(shard)
    }

    /// Decrypts every template of `store` into the matrix.
    pub fn from_store(store: Store) -> Result<Self, StoreError> {
        let started = Instant::now();
        let model = store.model().clone();
        let mut gallery = Gallery::new(model.id.clone(), model.dim);
        gallery.reserve(store.identity_count());
        let mut identities = HashMap::with_capacity(store.identity_count());
        store.visit_entries(|entry| {
            insert_entry(&mut gallery, &entry, model.dim)?;
            identities.insert(entry.record.id.clone(), entry.record);
            Ok(())
        })?;
        let report = OpenReport {
            identities: identities.len(),
            templates: gallery.len(),
            store_open: Duration::ZERO,
            elapsed: started.elapsed(),
        };
        Ok(Self { store, view: RwLock::new(GalleryView { gallery, identities }), writer: Mutex::new(()), report })
    }

    /// The gallery for matching. Hold the guard only for a search: changes wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, GalleryView> {
        self.view.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The underlying store (audit outbox, key rotation).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn open_report(&self) -> OpenReport {
        self.report
    }

    /// Counts for `gallery stats` and the status message.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let (identities, templates) = {
            let view = self.read();
            (view.identities.len(), view.gallery.len())
        };
        Ok(StoreStats {
            identities,
            templates,
            shards: self.store.shards()?,
            outbox_depth: self.store.outbox_depth()?,
            db_bytes: self.store.size_on_disk()?,
        })
    }

    /// Runs a sled change, then applies its result to the matrix.
    ///
    /// A change whose write failed (full or read-only disk: sled applied it
    /// in memory and its flush failed) may be in sled or not: the matrix is
    /// then rebuilt from what sled holds, so matching never differs from
    /// what the next change builds on. If even that read fails, the matrix
    /// is emptied: a gallery that cannot be read grants no one.
    fn change<T>(&self, commit: impl FnOnce(&Store) -> Result<(T, Changes), StoreError>) -> Result<T, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let (outcome, changes) = match commit(&self.store) {
            Ok(done) => done,
            Err(error @ (StoreError::Write { .. } | StoreError::Corrupt { .. })) => {
                self.reload_view();
                return Err(error);
            }
            Err(error) => return Err(error),
        };
        if changes.is_empty() {
            return Ok(outcome);
        }
        let dim = self.store.model().dim;
        let mut view = self.view.write().unwrap_or_else(PoisonError::into_inner);
        for (id, entry) in changes {
            view.gallery.remove(&id);
            match entry {
                Some(entry) => {
                    // Cannot fail: every stored template was checked against
                    // the model and dimension before it was committed.
                    insert_entry(&mut view.gallery, &entry, dim)?;
                    view.identities.insert(id, entry.record);
                }
                None => {
                    view.identities.remove(&id);
                }
            }
        }
        Ok(outcome)
    }
}

impl LiveShard {
    /// Rebuilds the matrix from sled (called with the writer lock held).
    fn reload_view(&self) {
        let model = self.store.model().clone();
        let mut gallery = Gallery::new(model.id.clone(), model.dim);
        let mut identities = HashMap::new();
        let loaded = self.store.visit_entries(|entry| {
            insert_entry(&mut gallery, &entry, model.dim)?;
            identities.insert(entry.record.id.clone(), entry.record);
            Ok(())
        });
        let mut view = self.view.write().unwrap_or_else(PoisonError::into_inner);
        match loaded {
            Ok(()) => *view = GalleryView { gallery, identities },
            Err(error) => {
                log::error!(error:% = error; "the gallery cannot be read back after a failed write: matching against an empty gallery until it can");
                *view = GalleryView { gallery: Gallery::new(model.id, model.dim), identities: HashMap::new() };
            }
        }
    }
}

fn insert_entry(gallery: &mut Gallery<IdentityId>, entry: &GalleryEntry, dim: usize) -> Result<(), StoreError> {
    let id = &entry.record.id;
    for template in &entry.templates {
        let bad = |e: facegate_face::FaceError| StoreError::corrupt(format!("a template of {id}: {e}"));
        let template = codec::to_template(template, dim).map_err(bad)?;
        gallery.insert(id.clone(), &template).map_err(bad)?;
    }
    Ok(())
}

impl GalleryStore for LiveShard {
    fn shard_seq(&self, shard: &ShardId) -> Result<u64, StoreError> {
        self.store.shard_seq(shard)
    }
    fn shards(&self) -> Result<Vec<ShardProgress>, StoreError> {
        self.store.shards()
    }
    fn apply_delta(&self, batch: &DeltaBatch) -> Result<DeltaOutcome, StoreError> {
        self.change(|store| store.apply_delta_changes(batch))
    }
    fn apply_snapshot(
        &self,
        shard: &ShardId,
        seq: u64,
        entries: &[SnapshotEntry],
    ) -> Result<SnapshotOutcome, StoreError> {
        self.change(|store| store.apply_snapshot_changes(shard, seq, entries))
    }
    fn upsert_local(&self, record: IdentityRecord, templates: Vec<TemplateRecord>) -> Result<ApplyReport, StoreError> {
        self.change(|store| store.upsert_local_changes(record, templates))
    }
    fn remove_local(&self, identity: &IdentityId) -> Result<ApplyReport, StoreError> {
        self.change(|store| store.remove_local_changes(identity))
    }
    fn purge_shards(&self, shards: &[ShardId]) -> Result<PurgeReport, StoreError> {
        self.change(|store| store.purge_shards_changes(shards))
    }
    fn entry(&self, identity: &IdentityId) -> Result<Option<GalleryEntry>, StoreError> {
        self.store.entry(identity)
    }
    fn entries(&self) -> Result<Vec<GalleryEntry>, StoreError> {
        self.store.entries()
    }
    fn append_audit(&self, event: AuditEvent) -> Result<u64, StoreError> {
        self.store.append_audit(event)
    }
    fn pending_audit(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        self.store.pending_audit(limit)
    }
    fn ack_audit(&self, up_to_seq: u64) -> Result<usize, StoreError> {
        self.store.ack_audit(up_to_seq)
    }
    fn outbox_depth(&self) -> Result<u64, StoreError> {
        self.store.outbox_depth()
    }
    fn outbox_epoch(&self) -> u64 {
        self.store.outbox_epoch()
    }
}

impl GalleryStore for Store {
    fn shard_seq(&self, shard: &ShardId) -> Result<u64, StoreError> {
        Store::shard_seq(self, shard)
    }
    fn shards(&self) -> Result<Vec<ShardProgress>, StoreError> {
        Store::shards(self)
    }
    fn apply_delta(&self, batch: &DeltaBatch) -> Result<DeltaOutcome, StoreError> {
        self.apply_delta_changes(batch).map(|(outcome, _)| outcome)
    }
    fn apply_snapshot(
        &self,
        shard: &ShardId,
        seq: u64,
        entries: &[SnapshotEntry],
    ) -> Result<SnapshotOutcome, StoreError> {
        self.apply_snapshot_changes(shard, seq, entries).map(|(outcome, _)| outcome)
    }
    fn upsert_local(&self, record: IdentityRecord, templates: Vec<TemplateRecord>) -> Result<ApplyReport, StoreError> {
        self.upsert_local_changes(record, templates).map(|(report, _)| report)
    }
    fn remove_local(&self, identity: &IdentityId) -> Result<ApplyReport, StoreError> {
        self.remove_local_changes(identity).map(|(report, _)| report)
    }
    fn purge_shards(&self, shards: &[ShardId]) -> Result<PurgeReport, StoreError> {
        self.purge_shards_changes(shards).map(|(report, _)| report)
    }
    fn entry(&self, identity: &IdentityId) -> Result<Option<GalleryEntry>, StoreError> {
        Store::entry(self, identity)
    }
    fn entries(&self) -> Result<Vec<GalleryEntry>, StoreError> {
        Store::entries(self)
    }
    fn append_audit(&self, event: AuditEvent) -> Result<u64, StoreError> {
        Store::append_audit(self, event)
    }
    fn pending_audit(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        Store::pending_audit(self, limit)
    }
    fn ack_audit(&self, up_to_seq: u64) -> Result<usize, StoreError> {
        Store::ack_audit(self, up_to_seq)
    }
    fn outbox_depth(&self) -> Result<u64, StoreError> {
        Store::outbox_depth(self)
    }
    fn outbox_epoch(&self) -> u64 {
        Store::outbox_epoch(self)
    }
}
