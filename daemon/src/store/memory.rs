//! The in-memory gallery store: the test implementation of [`GalleryStore`]
//! and the model the sled store is checked against.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use facegate_protocol::{
    AuditEvent, DeltaBatch, DeltaOp, IdentityId, IdentityRecord, ShardId, ShardProgress, SnapshotEntry, TemplateRecord,
};

use super::codec;
use super::{
    ApplyReport, DeltaOutcome, GalleryEntry, GalleryModel, GalleryStore, PurgeReport, SnapshotOutcome, StoreError,
    local_shard,
};

/// Everything in memory, behind one lock; same contract as the sled store.
#[derive(Debug)]
pub struct MemoryStore {
    model: GalleryModel,
    state: Mutex<State>,
    outbox_epoch: u64,
}

#[derive(Debug, Default)]
struct State {
    identities: BTreeMap<IdentityId, GalleryEntry>,
    seqs: BTreeMap<ShardId, u64>,
    outbox: BTreeMap<u64, AuditEvent>,
    audit_seq: u64,
}

impl State {
    fn upsert(&mut self, shard: &ShardId, record: &IdentityRecord, templates: Vec<TemplateRecord>) {
        match self.identities.get_mut(&record.id) {
            Some(entry) if entry.record.version > record.version => {
                entry.shards.insert(shard.clone());
            }
            existing => {
                let mut shards = existing.map(|e| std::mem::take(&mut e.shards)).unwrap_or_default();
                shards.insert(shard.clone());
                self.identities.insert(record.id.clone(), GalleryEntry { record: record.clone(), shards, templates });
            }
        }
    }

    fn remove(&mut self, shard: &ShardId, id: &IdentityId) -> bool {
        let Some(entry) = self.identities.get_mut(id) else {
            return false;
        };
        if !entry.shards.remove(shard) {
            return false;
        }
        if entry.shards.is_empty() {
            self.identities.remove(id);
        }
        true
    }
}

impl MemoryStore {
    pub fn new(model: GalleryModel) -> Self {
        Self { model, state: Mutex::new(State::default()), outbox_epoch: 1 }
    }

    /// The same store with outbox epoch `epoch` (1 unless set).
    pub fn with_outbox_epoch(mut self, epoch: u64) -> Self {
        self.outbox_epoch = epoch;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks every upsert first, so a refused change changes nothing.
    fn admit_all<'a>(
        &self,
        upserts: impl Iterator<Item = (&'a IdentityRecord, &'a [TemplateRecord])>,
    ) -> Result<(Vec<Vec<TemplateRecord>>, usize), StoreError> {
        let (mut kept, mut skipped) = (Vec::new(), 0);
        for (record, templates) in upserts {
            let (k, s) = codec::admit(&self.model, record, templates)?;
            kept.push(k);
            skipped += s;
        }
        Ok((kept, skipped))
    }
}

impl GalleryStore for MemoryStore {
    fn shard_seq(&self, shard: &ShardId) -> Result<u64, StoreError> {
        Ok(self.state().seqs.get(shard).copied().unwrap_or(0))
    }

    fn shards(&self) -> Result<Vec<ShardProgress>, StoreError> {
        Ok(self.state().seqs.iter().map(|(shard, &seq)| ShardProgress { shard: shard.clone(), seq }).collect())
    }

    fn apply_delta(&self, batch: &DeltaBatch) -> Result<DeltaOutcome, StoreError> {
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
        let mut state = self.state();
        let local_seq = state.seqs.get(&batch.shard).copied().unwrap_or(0);
        if batch.seq <= local_seq {
            return Ok(DeltaOutcome::AlreadyApplied { local_seq });
        }
        if batch.base_seq != local_seq {
            return Ok(DeltaOutcome::Resync { local_seq });
        }
        let (kept, skipped) = self.admit_all(batch.ops.iter().filter_map(|op| match op {
            DeltaOp::Upsert { identity, templates } => Some((identity, templates.as_slice())),
            DeltaOp::Remove { .. } => None,
        }))?;
        let mut kept = kept.into_iter();
        let mut report = ApplyReport { seq: batch.seq, skipped_templates: skipped, ..ApplyReport::default() };
        for op in &batch.ops {
            match op {
                DeltaOp::Upsert { identity, .. } => {
                    state.upsert(&batch.shard, identity, kept.next().unwrap_or_default());
                    report.upserted += 1;
                }
                DeltaOp::Remove { identity } => report.removed += usize::from(state.remove(&batch.shard, identity)),
            }
        }
        state.seqs.insert(batch.shard.clone(), batch.seq);
        Ok(DeltaOutcome::Applied(report))
    }

    fn apply_snapshot(
        &self,
        shard: &ShardId,
        seq: u64,
        entries: &[SnapshotEntry],
    ) -> Result<SnapshotOutcome, StoreError> {
        if *shard == local_shard() {
            return Err(StoreError::ReservedShard(shard.clone()));
        }
        let mut state = self.state();
        let local_seq = state.seqs.get(shard).copied().unwrap_or(0);
        if seq < local_seq {
            return Ok(SnapshotOutcome::Stale { local_seq });
        }
        let (kept, skipped) = self.admit_all(entries.iter().map(|e| (&e.identity, e.templates.as_slice())))?;
        let incoming: BTreeSet<&IdentityId> = entries.iter().map(|e| &e.identity.id).collect();
        let leaving: Vec<IdentityId> = state
            .identities
            .values()
            .filter(|e| e.shards.contains(shard) && !incoming.contains(&e.record.id))
            .map(|e| e.record.id.clone())
            .collect();
        let mut report = ApplyReport { seq, skipped_templates: skipped, ..ApplyReport::default() };
        for id in &leaving {
            report.removed += usize::from(state.remove(shard, id));
        }
        for (entry, kept) in entries.iter().zip(kept) {
            state.upsert(shard, &entry.identity, kept);
            report.upserted += 1;
        }
        state.seqs.insert(shard.clone(), seq);
        Ok(SnapshotOutcome::Applied(report))
    }

    fn upsert_local(&self, record: IdentityRecord, templates: Vec<TemplateRecord>) -> Result<ApplyReport, StoreError> {
        let (kept, skipped) = codec::admit(&self.model, &record, &templates)?;
        let shard = local_shard();
        let mut state = self.state();
        let seq = state.seqs.get(&shard).copied().unwrap_or(0) + 1;
        state.upsert(&shard, &record, kept);
        state.seqs.insert(shard, seq);
        Ok(ApplyReport { seq, upserted: 1, removed: 0, skipped_templates: skipped })
    }

    fn remove_local(&self, identity: &IdentityId) -> Result<ApplyReport, StoreError> {
        let shard = local_shard();
        let mut state = self.state();
        let seq = state.seqs.get(&shard).copied().unwrap_or(0);
        if !state.remove(&shard, identity) {
            return Ok(ApplyReport { seq, ..ApplyReport::default() });
        }
        state.seqs.insert(shard, seq + 1);
        Ok(ApplyReport { seq: seq + 1, removed: 1, ..ApplyReport::default() })
    }

    fn purge_shards(&self, shards: &[ShardId]) -> Result<PurgeReport, StoreError> {
        let local = local_shard();
        if shards.contains(&local) {
            return Err(StoreError::ReservedShard(local));
        }
        let purged: BTreeSet<&ShardId> = shards.iter().collect();
        let mut state = self.state();
        let mut report = PurgeReport { shards: purged.len(), ..PurgeReport::default() };
        state.identities.retain(|_, entry| {
            let before = entry.shards.len();
            entry.shards.retain(|s| !purged.contains(s));
            if entry.shards.len() == before {
                return true;
            }
            if entry.shards.is_empty() {
                report.removed += 1;
                false
            } else {
                report.kept += 1;
                true
            }
        });
        state.seqs.retain(|shard, _| !purged.contains(shard));
        Ok(report)
    }

    fn entry(&self, identity: &IdentityId) -> Result<Option<GalleryEntry>, StoreError> {
        Ok(self.state().identities.get(identity).cloned())
    }

    fn entries(&self) -> Result<Vec<GalleryEntry>, StoreError> {
        Ok(self.state().identities.values().cloned().collect())
    }

    fn append_audit(&self, mut event: AuditEvent) -> Result<u64, StoreError> {
        let mut state = self.state();
        state.audit_seq += 1;
        event.seq = state.audit_seq;
        event.epoch = self.outbox_epoch;
        state.outbox.insert(event.seq, event);
        Ok(state.audit_seq)
    }

    fn pending_audit(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self.state().outbox.values().take(limit).cloned().collect())
    }

    fn ack_audit(&self, up_to_seq: u64) -> Result<usize, StoreError> {
        let mut state = self.state();
        let keep = state.outbox.split_off(&(up_to_seq.saturating_add(1)));
        let acked = std::mem::replace(&mut state.outbox, keep);
        Ok(acked.len())
    }

    fn outbox_depth(&self) -> Result<u64, StoreError> {
        Ok(self.state().outbox.len() as u64)
    }

    fn outbox_epoch(&self) -> u64 {
        self.outbox_epoch
    }
}
