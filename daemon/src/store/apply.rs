//! Gallery changes: deltas, snapshots, standalone edits and key rotation,
//! each one sled transaction over `identities`, `templates` and `meta`,
//! flushed before it is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError};

use facegate_protocol::{DeltaBatch, DeltaOp, IdentityId, IdentityRecord, ShardId, SnapshotEntry, TemplateRecord};
use sled::transaction::{ConflictableTransactionError, Transactional, TransactionalTree};

use super::codec::{self, StoredIdentity};
use super::{
    ApplyReport, DeltaOutcome, DeviceKey, GalleryEntry, PurgeReport, SnapshotOutcome, Store, StoreError, local_shard,
};

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// The final state of every identity a change touched (`None`: forgotten),
/// for the in-memory gallery to follow.
pub(crate) type Changes = BTreeMap<IdentityId, Option<GalleryEntry>>;

/// A checked op: templates already filtered to the device's model.
enum Prepared {
    Upsert(IdentityRecord, Vec<TemplateRecord>),
    Remove(IdentityId),
}

fn abort(error: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error)
}

/// The three gallery trees inside one transaction.
struct Tx<'a> {
    identities: &'a TransactionalTree,
    templates: &'a TransactionalTree,
    meta: &'a TransactionalTree,
    key: &'a DeviceKey,
}

impl Tx<'_> {
    fn stored(&self, identity: &IdentityId) -> TxResult<Option<StoredIdentity>> {
        match self.identities.get(identity.as_str())? {
            Some(bytes) => codec::from_cbor(&bytes, "an identity record").map(Some).map_err(abort),
            None => Ok(None),
        }
    }

    fn templates_of(&self, identity: &IdentityId) -> TxResult<Vec<TemplateRecord>> {
        let sealed = self
            .templates
            .get(identity.as_str())?
            .ok_or_else(|| abort(StoreError::corrupt(format!("identity {identity} has no template entry"))))?;
        codec::open_templates(self.key, identity, &sealed).map_err(abort)
    }

    fn write(&self, stored: &StoredIdentity) -> TxResult<()> {
        self.identities.insert(stored.record.id.as_str(), codec::to_cbor(stored))?;
        Ok(())
    }

    /// Adds `shard` to the identity's shards; the record and templates are
    /// replaced unless the stored record has a higher version (another shard
    /// already delivered a newer one).
    fn upsert(
        &self,
        shard: &ShardId,
        record: &IdentityRecord,
        templates: &[TemplateRecord],
        changes: &mut Changes,
    ) -> TxResult<()> {
        let id = &record.id;
        let (stored, templates) = match self.stored(id)? {
            Some(mut stored) if stored.record.version > record.version => {
                stored.shards.insert(shard.clone());
                let kept = self.templates_of(id)?;
                (stored, kept)
            }
            existing => {
                let mut shards = existing.map(|s| s.shards).unwrap_or_default();
                shards.insert(shard.clone());
                let sealed = codec::seal_templates(self.key, id, templates).map_err(abort)?;
                self.templates.insert(id.as_str(), sealed)?;
                (StoredIdentity { record: record.clone(), shards }, templates.to_vec())
            }
        };
        self.write(&stored)?;
        let entry = GalleryEntry { record: stored.record, shards: stored.shards, templates };
        changes.insert(id.clone(), Some(entry));
        Ok(())
    }

    /// Takes `shard` out of the identity's shards, forgetting the identity
    /// when no shard includes it any more. False when it was not in `shard`.
    fn remove(&self, shard: &ShardId, id: &IdentityId, changes: &mut Changes) -> TxResult<bool> {
        let Some(mut stored) = self.stored(id)? else {
            return Ok(false);
        };
        if !stored.shards.remove(shard) {
            return Ok(false);
        }
        if stored.shards.is_empty() {
            self.identities.remove(id.as_str())?;
            self.templates.remove(id.as_str())?;
            changes.insert(id.clone(), None);
        } else {
            self.write(&stored)?;
            let templates = self.templates_of(id)?;
            changes.insert(id.clone(), Some(GalleryEntry { record: stored.record, shards: stored.shards, templates }));
        }
        Ok(true)
    }

    /// Takes every shard of `purged` out of the identity's shards,
    /// forgetting it (record and templates) when none is left. `None` when
    /// it was in none of them; `Some(true)` when it is forgotten.
    fn drop_shards(
        &self,
        id: &IdentityId,
        purged: &BTreeSet<&ShardId>,
        changes: &mut Changes,
    ) -> TxResult<Option<bool>> {
        let Some(mut stored) = self.stored(id)? else {
            return Ok(None);
        };
        let before = stored.shards.len();
        stored.shards.retain(|s| !purged.contains(s));
        if stored.shards.len() == before {
            return Ok(None);
        }
        if stored.shards.is_empty() {
            self.identities.remove(id.as_str())?;
            self.templates.remove(id.as_str())?;
            changes.insert(id.clone(), None);
            return Ok(Some(true));
        }
        self.write(&stored)?;
        let templates = self.templates_of(id)?;
        changes.insert(id.clone(), Some(GalleryEntry { record: stored.record, shards: stored.shards, templates }));
        Ok(Some(false))
    }

    fn set_seq(&self, shard: &ShardId, seq: u64) -> TxResult<()> {
        self.meta.insert(codec::seq_key(shard), codec::u64_bytes(seq))?;
        Ok(())
    }
}

impl Store {
    /// Runs `ops` on `shard` and sets its seq in one transaction, then flushes.
    fn commit(&self, shard: &ShardId, seq: u64, ops: &[Prepared]) -> Result<(ApplyReport, Changes), StoreError> {
        let key = self.key();
        let outcome = (&self.identities, &self.templates, &self.meta)
            .transaction(|(identities, templates, meta)| {
                let tx = Tx { identities, templates, meta, key: &key };
                let mut changes = Changes::new();
                let mut report = ApplyReport { seq, ..ApplyReport::default() };
                for op in ops {
                    match op {
                        Prepared::Upsert(record, kept) => {
                            tx.upsert(shard, record, kept, &mut changes)?;
                            report.upserted += 1;
                        }
                        Prepared::Remove(id) => report.removed += usize::from(tx.remove(shard, id, &mut changes)?),
                    }
                }
                tx.set_seq(shard, seq)?;
                Ok((report, changes))
            })
            .map_err(StoreError::transaction)?;
        self.flush()?;
        Ok(outcome)
    }

    fn prepare_upsert(
        &self,
        record: &IdentityRecord,
        templates: &[TemplateRecord],
        skipped: &mut usize,
    ) -> Result<Prepared, StoreError> {
        let (kept, skip) = codec::admit(&self.model, record, templates)?;
        *skipped += skip;
        Ok(Prepared::Upsert(record.clone(), kept))
    }

    pub(crate) fn apply_delta_changes(&self, batch: &DeltaBatch) -> Result<(DeltaOutcome, Changes), StoreError> {
        if batch.shard == local_shard() {
            return Err(StoreError::ReservedShard(batch.shard.clone()));
        }
        if batch.seq <= batch.base_seq {
            return Err(StoreError::InvalidDelta {
                shard: batch.shard.clone(),
                base_seq: batch.base_seq,
                seq: batch.seq,
            });
        }
        let _writer = self.writer_lock();
        let local_seq = self.shard_seq(&batch.shard)?;
        if batch.seq <= local_seq {
            return Ok((DeltaOutcome::AlreadyApplied { local_seq }, Changes::new()));
        }
        if batch.base_seq != local_seq {
            return Ok((DeltaOutcome::Resync { local_seq }, Changes::new()));
        }
        let mut skipped = 0;
        let mut ops = Vec::with_capacity(batch.ops.len());
        for op in &batch.ops {
            ops.push(match op {
                DeltaOp::Upsert { identity, templates } => self.prepare_upsert(identity, templates, &mut skipped)?,
                DeltaOp::Remove { identity } => Prepared::Remove(identity.clone()),
            });
        }
        let (mut report, changes) = self.commit(&batch.shard, batch.seq, &ops)?;
        report.skipped_templates = skipped;
        Ok((DeltaOutcome::Applied(report), changes))
    }

    pub(crate) fn apply_snapshot_changes(
        &self,
        shard: &ShardId,
        seq: u64,
        entries: &[SnapshotEntry],
    ) -> Result<(SnapshotOutcome, Changes), StoreError> {
        if *shard == local_shard() {
            return Err(StoreError::ReservedShard(shard.clone()));
        }
        let _writer = self.writer_lock();
        let local_seq = self.shard_seq(shard)?;
        if seq < local_seq {
            return Ok((SnapshotOutcome::Stale { local_seq }, Changes::new()));
        }
        let mut skipped = 0;
        let mut ops = Vec::with_capacity(entries.len());
        let incoming: BTreeSet<&IdentityId> = entries.iter().map(|e| &e.identity.id).collect();
        // The writer lock keeps membership as scanned until the transaction.
        for item in self.identities.iter() {
            let (key, bytes) = item.map_err(StoreError::read)?;
            let stored: StoredIdentity = codec::from_cbor(&bytes, "an identity record")?;
            if stored.shards.contains(shard) && !incoming.contains(&stored.record.id) {
                ops.push(Prepared::Remove(codec::identity_of_key(&key)?));
            }
        }
        for entry in entries {
            ops.push(self.prepare_upsert(&entry.identity, &entry.templates, &mut skipped)?);
        }
        let (mut report, changes) = self.commit(shard, seq, &ops)?;
        report.skipped_templates = skipped;
        Ok((SnapshotOutcome::Applied(report), changes))
    }

    pub(crate) fn upsert_local_changes(
        &self,
        record: IdentityRecord,
        templates: Vec<TemplateRecord>,
    ) -> Result<(ApplyReport, Changes), StoreError> {
        let shard = local_shard();
        let mut skipped = 0;
        let op = self.prepare_upsert(&record, &templates, &mut skipped)?;
        let _writer = self.writer_lock();
        let seq = self.shard_seq(&shard)? + 1;
        let (mut report, changes) = self.commit(&shard, seq, &[op])?;
        report.skipped_templates = skipped;
        Ok((report, changes))
    }

    pub(crate) fn remove_local_changes(&self, identity: &IdentityId) -> Result<(ApplyReport, Changes), StoreError> {
        let shard = local_shard();
        let _writer = self.writer_lock();
        let seq = self.shard_seq(&shard)?;
        let member = match self.entry(identity)? {
            Some(entry) => entry.shards.contains(&shard),
            None => false,
        };
        if !member {
            return Ok((ApplyReport { seq, ..ApplyReport::default() }, Changes::new()));
        }
        self.commit(&shard, seq + 1, &[Prepared::Remove(identity.clone())])
    }

    /// Forgets `shards` in one transaction, then flushes: each is taken out of
    /// every identity, identities left in no shard are deleted with their
    /// templates, and the shards' seqs are deleted (a shard assigned again
    /// later starts from 0). The [`LOCAL_SHARD`](super::LOCAL_SHARD) is refused.
    pub(crate) fn purge_shards_changes(&self, shards: &[ShardId]) -> Result<(PurgeReport, Changes), StoreError> {
        let local = local_shard();
        if shards.contains(&local) {
            return Err(StoreError::ReservedShard(local));
        }
        let purged: BTreeSet<&ShardId> = shards.iter().collect();
        let _writer = self.writer_lock();
        // The writer lock keeps membership as scanned until the transaction.
        let mut members = Vec::new();
        for item in self.identities.iter() {
            let (key, bytes) = item.map_err(StoreError::read)?;
            let stored: StoredIdentity = codec::from_cbor(&bytes, "an identity record")?;
            if stored.shards.iter().any(|s| purged.contains(s)) {
                members.push(codec::identity_of_key(&key)?);
            }
        }
        let key = self.key();
        let outcome = (&self.identities, &self.templates, &self.meta)
            .transaction(|(identities, templates, meta)| {
                let tx = Tx { identities, templates, meta, key: &key };
                let mut changes = Changes::new();
                let mut report = PurgeReport { shards: purged.len(), ..PurgeReport::default() };
                for id in &members {
                    match tx.drop_shards(id, &purged, &mut changes)? {
                        Some(true) => report.removed += 1,
                        Some(false) => report.kept += 1,
                        None => {}
                    }
                }
                for shard in &purged {
                    meta.remove(codec::seq_key(shard))?;
                }
                Ok((report, changes))
            })
            .map_err(StoreError::transaction)?;
        self.flush()?;
        Ok(outcome)
    }

    /// Re-encrypts every template and the key check value under `new` in one
    /// transaction, from then on uses `new`, and flushes. The caller replaces
    /// the key file afterwards (write the new key beside the old one first:
    /// if power fails between the two steps, the database opens only with
    /// the new key); [`super::rotate_key_file`] does all of it.
    ///
    /// A failed flush still leaves the store using `new`: sled holds the
    /// re-encrypted values in memory and may make them durable later, so
    /// keep both key files until a flush succeeds.
    pub fn rotate_key(&self, new: DeviceKey) -> Result<(), StoreError> {
        let _writer = self.writer_lock();
        let mut key = self.key.write().unwrap_or_else(PoisonError::into_inner);
        let mut resealed = Vec::with_capacity(self.templates.len());
        for item in self.templates.iter() {
            let (raw, sealed) = item.map_err(StoreError::read)?;
            let identity = codec::identity_of_key(&raw)?;
            let templates = codec::open_templates(&key, &identity, &sealed)?;
            resealed.push((raw, codec::seal_templates(&new, &identity, &templates)?));
        }
        let check = codec::key_check_value(&new)?;
        (&self.templates, &self.meta)
            .transaction(|(templates, meta)| {
                for (raw, sealed) in &resealed {
                    templates.insert(raw, sealed.as_slice())?;
                }
                meta.insert(codec::META_KEY_CHECK, check.as_slice())?;
                Ok(())
            })
            .map_err(StoreError::transaction)?;
        *key = Arc::new(new);
        drop(key);
        self.flush()
    }
}
