//! The kiosk's gallery shard and audit outbox, on sled 0.34, encrypted at rest
//! (DESIGN.md §4).
//!
//! Trees of one sled database:
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `identities` | identity id | CBOR: the [`IdentityRecord`] and the shards that include it |
//! | `templates` | identity id | format byte, 96-bit nonce, AES-256-GCM of the CBOR template list (AAD: the id) |
//! | `meta` | name | schema version, model id, key check value, audit seq, outbox epoch, `seq/{shard}` |
//! | `outbox` | u64 big-endian seq | CBOR [`AuditEvent`] |
//!
//! Every change of the gallery (a delta, a snapshot, a standalone edit) is one
//! sled transaction over `identities`, `templates` and `meta` that also moves
//! the shard's sequence number, followed by a flush (fsync) before success is
//! returned: after a power cut a shard is before or after a change, never
//! between. [`LiveShard`] keeps the decrypted in-memory [`Gallery`] in step.
//!
//! [`IdentityRecord`]: facegate_protocol::IdentityRecord
//! [`AuditEvent`]: facegate_protocol::AuditEvent
//! [`Gallery`]: facegate_face::Gallery

mod apply;
pub mod cli;
mod codec;
mod db;
mod error;
mod key;
mod live;
mod memory;
mod outbox;
mod rotation;

use std::collections::BTreeSet;

use facegate_protocol::{
    AuditEvent, DeltaBatch, IdentityId, IdentityRecord, ShardId, ShardProgress, SnapshotEntry, TemplateRecord,
};

pub use db::{Store, StoreConfig, StoreStats};
pub use error::StoreError;
pub use key::DeviceKey;
pub use live::{GalleryView, LiveShard, OpenReport};
pub use memory::MemoryStore;
pub use rotation::{open_with_key_file, pending_key_path, rotate_key_file};

/// Name of the shard that holds standalone (no server) enrollments. The
/// server never sends deltas for it; a delta or snapshot naming it is refused.
pub const LOCAL_SHARD: &str = "local";

/// Version of the on-disk layout this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The shard id of standalone edits ([`LOCAL_SHARD`]).
pub fn local_shard() -> ShardId {
    ShardId::new(LOCAL_SHARD).unwrap_or_else(|_| unreachable!("\"local\" is a valid shard id"))
}

/// The embedder this device runs: only its templates are kept and matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GalleryModel {
    pub id: String,
    /// Template length in f32 values.
    pub dim: usize,
}

/// One identity as stored: its record, the shards that include it, and its
/// templates (only those of the device's model).
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryEntry {
    pub record: IdentityRecord,
    pub shards: BTreeSet<ShardId>,
    pub templates: Vec<TemplateRecord>,
}

/// What applying a change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// The shard's sequence number after the change.
    pub seq: u64,
    pub upserted: usize,
    pub removed: usize,
    /// Templates of another model than the device's, not stored.
    pub skipped_templates: usize,
}

/// What [`GalleryStore::purge_shards`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Shards forgotten.
    pub shards: usize,
    /// Identities deleted (in no other shard).
    pub removed: usize,
    /// Identities kept because another shard still includes them.
    pub kept: usize,
}

/// Result of [`GalleryStore::apply_delta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// Every op and the new seq are stored (and flushed).
    Applied(ApplyReport),
    /// `batch.seq` is not above the local seq: a replay, already applied.
    /// Nothing changed and nothing needs doing.
    AlreadyApplied { local_seq: u64 },
    /// `batch.base_seq` is not the local seq (a gap, or a batch overlapping
    /// what is applied). Nothing changed; ask the server to resync from `local_seq`.
    Resync { local_seq: u64 },
}

/// Result of [`GalleryStore::apply_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// The shard's membership is replaced and its seq set (flushed).
    Applied(ApplyReport),
    /// The snapshot is older than what is applied; nothing changed.
    Stale { local_seq: u64 },
}

/// The gallery shard and audit outbox as the sync and pipeline threads see
/// them: the boundary between the sync state machine and storage.
/// [`LiveShard`] is the production implementation (sled + in-memory matrix);
/// [`MemoryStore`] is the test one, kept equal to it by the model-based test
/// (`daemon/tests/store_model.rs`).
pub trait GalleryStore {
    /// Applied sequence number of `shard` (0 for a shard never seen).
    fn shard_seq(&self, shard: &ShardId) -> Result<u64, StoreError>;
    /// Every shard with an applied seq, by shard id (the local shard included).
    fn shards(&self) -> Result<Vec<ShardProgress>, StoreError>;
    /// Applies every op and the new seq atomically, only when
    /// `batch.base_seq` equals the shard's seq; see [`DeltaOutcome`].
    fn apply_delta(&self, batch: &DeltaBatch) -> Result<DeltaOutcome, StoreError>;
    /// Replaces the membership of `shard` by `entries` and sets its seq,
    /// atomically; refused as stale when `seq` is below the shard's seq.
    fn apply_snapshot(
        &self,
        shard: &ShardId,
        seq: u64,
        entries: &[SnapshotEntry],
    ) -> Result<SnapshotOutcome, StoreError>;
    /// Adds or replaces an identity in the [`LOCAL_SHARD`] and bumps its seq.
    fn upsert_local(&self, record: IdentityRecord, templates: Vec<TemplateRecord>) -> Result<ApplyReport, StoreError>;
    /// Takes an identity out of the [`LOCAL_SHARD`] (it stays while another
    /// shard includes it) and bumps its seq; `removed` is 0 if it was not there.
    fn remove_local(&self, identity: &IdentityId) -> Result<ApplyReport, StoreError>;
    /// Forgets `shards` in one transaction: each is taken out of every
    /// identity, identities then in no shard are deleted with their
    /// templates, and the shards' seqs are deleted (a shard assigned again
    /// later starts from 0). The [`LOCAL_SHARD`] is refused. Used when the
    /// centre drops shards from the device's assignment, or starts a new
    /// log epoch.
    fn purge_shards(&self, shards: &[ShardId]) -> Result<PurgeReport, StoreError>;
    /// The identity as stored, if any.
    fn entry(&self, identity: &IdentityId) -> Result<Option<GalleryEntry>, StoreError>;
    /// Every identity, by id.
    fn entries(&self) -> Result<Vec<GalleryEntry>, StoreError>;
    /// Stores `event` durably under the next per-device seq (its `seq` field
    /// is ignored and replaced, its `epoch` set to [`GalleryStore::outbox_epoch`])
    /// and returns that seq. Only after this returns
    /// may the decision be actuated; an error must raise an alarm.
    fn append_audit(&self, event: AuditEvent) -> Result<u64, StoreError>;
    /// Up to `limit` unacknowledged events, oldest first.
    fn pending_audit(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
    /// Deletes every event with `seq <= up_to_seq`; returns how many.
    fn ack_audit(&self, up_to_seq: u64) -> Result<usize, StoreError>;
    /// Unacknowledged events.
    fn outbox_depth(&self) -> Result<u64, StoreError>;
    /// The outbox's epoch: a random number chosen when the database was
    /// created, kept across restarts, different for a re-created database.
    fn outbox_epoch(&self) -> u64;
}
