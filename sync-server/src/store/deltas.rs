//! The per-shard delta log: what the MQTT sync publishes to kiosks.
//!
//! Entries are appended inside the transaction that changes the identity,
//! with sequence numbers from the shard's counter (`delta:{shard}`), so each
//! shard's log is gap-free and ordered. An entry names the identity; reading
//! the log turns it into a [`DeltaOp`] with the identity's *current* record
//! and templates (an `Upsert` of someone since forgotten or moved out of the
//! shard reads as a `Remove`). Replaying from any point therefore converges
//! on the current state, and forgetting someone also forgets them in the log.

use std::collections::{BTreeMap, HashMap};

use facegate_protocol::{DeltaBatch, DeltaOp, IdentityId, IdentityRecord, ShardId, SnapshotEntry, TemplateRecord};
use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::doc;

use super::{DeltaDoc, DeltaKind, IdentityDoc, Store, StoreError, TemplateDoc, in_transaction, now_millis};

/// How long a delta entry whose identity state is not visible yet is held
/// back from publication (see `Store::not_yet_visible`).
pub const SETTLE_MS: i64 = 10_000;

/// Counter name of a shard's delta log.
pub fn shard_counter(shard: &str) -> String {
    format!("delta:{shard}")
}

/// One entry to append: what happened to which identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaEntry {
    pub kind: DeltaKind,
    pub identity: String,
    pub version: i64,
}

impl Store {
    /// Appends `entries` to `shard`'s log inside `session`'s transaction;
    /// returns the sequence number of each entry.
    pub async fn append_deltas_in(
        &self,
        session: &mut ClientSession,
        shard: &str,
        entries: &[DeltaEntry],
    ) -> Result<Vec<i64>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let last = self.next_seq(session, &shard_counter(shard), entries.len() as i64).await?;
        let first = last - entries.len() as i64 + 1;
        let now = now_millis();
        let docs: Vec<DeltaDoc> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let seq = first + i as i64;
                DeltaDoc {
                    id: format!("{shard}:{seq:020}"),
                    shard: shard.to_string(),
                    seq,
                    kind: e.kind,
                    identity: e.identity.clone(),
                    version: e.version,
                    at: now,
                }
            })
            .collect();
        match self.deltas().insert_many(&docs).session(session).await {
            Ok(_) => Ok((first..=last).collect()),
            Err(e) if super::is_duplicate_key(&e) => {
                Err(StoreError::SequenceTaken { counter: shard_counter(shard), seq: first })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Appends `entries` to `shard`'s log in a transaction of its own (for
    /// callers outside an identity change, e.g. a forced re-publish).
    pub async fn append_deltas(&self, shard: &ShardId, entries: &[DeltaEntry]) -> Result<Vec<i64>, StoreError> {
        in_transaction!(self, |session| self.append_deltas_in(session, shard.as_str(), entries).await)
    }

    /// The shard's latest sequence number (0: empty log).
    pub async fn shard_head(&self, shard: &ShardId) -> Result<u64, StoreError> {
        Ok(self.counter(&shard_counter(shard.as_str())).await?.max(0) as u64)
    }

    /// Raw log entries of `shard` with `after < seq`, oldest first, at most `limit`.
    pub async fn delta_entries_after(
        &self,
        shard: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeltaDoc>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let cursor = self
            .deltas()
            .find(doc! { "shard": shard, "seq": { "$gt": after } })
            .sort(doc! { "seq": 1 })
            .limit(limit.clamp(1, 10_000) as i64)
            .await?;
        Ok(cursor.try_collect().await?)
    }

    /// The deltas of `shard` after `after_seq`, at most `limit` entries, as a
    /// [`DeltaBatch`] from `after_seq` to the last entry read. `None` when
    /// there is nothing new. A device at `after_seq` applies it as is.
    pub async fn read_deltas_after(
        &self,
        shard: &ShardId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Option<DeltaBatch>, StoreError> {
        let entries = self.delta_entries_after(shard.as_str(), after_seq, limit).await?;
        // The log must be contiguous from after_seq: a hole means a writer
        // has not committed yet (cannot happen with the counter in the
        // transaction, but never hand a device a batch with a hole).
        let contiguous: Vec<&DeltaDoc> = entries
            .iter()
            .zip(after_seq as i64 + 1..)
            .take_while(|(entry, expected)| entry.seq == *expected)
            .map(|(entry, _)| entry)
            .collect();
        let Some(last_contiguous) = contiguous.last() else {
            return Ok(None);
        };
        // Latest state of every identity named, read once.
        let mut wanted: Vec<&str> = contiguous.iter().map(|e| e.identity.as_str()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let states = self.identity_states(&wanted).await?;
        let now = now_millis();
        let mut ops = Vec::with_capacity(contiguous.len());
        let mut last = last_contiguous.seq;
        for entry in &contiguous {
            if self.not_yet_visible(entry, &states, now).await? {
                log::debug!(shard:% = shard, seq = entry.seq, identity = entry.identity.as_str();
                    "delta entry ahead of its identity's state: held until the commit is visible");
                last = entry.seq - 1;
                break;
            }
            ops.push(materialize(shard.as_str(), entry, &states)?);
        }
        if ops.is_empty() {
            return Ok(None);
        }
        Ok(Some(DeltaBatch { shard: shard.clone(), base_seq: after_seq, seq: last as u64, ops }))
    }

    /// Whether an `Upsert` entry was read before the state it announces:
    /// the identity absent or at an older version, or without templates,
    /// and nothing later for it in the shard's log (a later entry means it
    /// was forgotten or moved since, and the `Remove` it becomes is right).
    /// MongoDB shows a committed transaction at once; jongodb (the test
    /// server) shows it one collection at a time for up to about a second,
    /// and publishing then would hand devices a `Remove` for a new person.
    /// Held for at most [`SETTLE_MS`] after the entry was written, so an
    /// identity left without templates does not stop its shard.
    async fn not_yet_visible(
        &self,
        entry: &DeltaDoc,
        states: &HashMap<String, (IdentityDoc, Vec<TemplateDoc>)>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let complete = match states.get(&entry.identity) {
            Some((identity, templates)) => identity.version >= entry.version && !templates.is_empty(),
            None => false,
        };
        if entry.kind != DeltaKind::Upsert || complete || now - entry.at >= SETTLE_MS {
            return Ok(false);
        }
        let later = self
            .deltas()
            .find_one(doc! { "shard": &entry.shard, "identity": &entry.identity, "seq": { "$gt": entry.seq } })
            .await?;
        Ok(later.is_none())
    }

    /// Current identity record and templates for each id that still exists.
    async fn identity_states(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, (IdentityDoc, Vec<TemplateDoc>)>, StoreError> {
        let identities: Vec<IdentityDoc> =
            self.identities().find(doc! { "_id": { "$in": ids } }).await?.try_collect().await?;
        let templates: Vec<TemplateDoc> = self
            .templates()
            .find(doc! { "identity": { "$in": ids } })
            .sort(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        let mut by_identity: BTreeMap<String, Vec<TemplateDoc>> = BTreeMap::new();
        for t in templates {
            by_identity.entry(t.identity.clone()).or_default().push(t);
        }
        Ok(identities
            .into_iter()
            .map(|i| {
                let t = by_identity.remove(&i.id).unwrap_or_default();
                (i.id.clone(), (i, t))
            })
            .collect())
    }

    /// Every identity of `shard` with its templates, and the shard's sequence
    /// number the state corresponds to (read in one snapshot transaction).
    pub async fn shard_snapshot(&self, shard: &ShardId) -> Result<(u64, Vec<SnapshotEntry>), StoreError> {
        in_transaction!(self, |session| self.shard_snapshot_in(session, shard).await)
    }

    async fn shard_snapshot_in(
        &self,
        session: &mut ClientSession,
        shard: &ShardId,
    ) -> Result<(u64, Vec<SnapshotEntry>), StoreError> {
        let head = self
            .counters()
            .find_one(doc! { "_id": shard_counter(shard.as_str()) })
            .session(&mut *session)
            .await?
            .and_then(|d| d.get_i64("seq").ok())
            .unwrap_or(0);
        let mut cursor = self.identities().find(doc! { "groups": shard.as_str() }).session(&mut *session).await?;
        let mut identities = Vec::new();
        while let Some(i) = cursor.next(&mut *session).await.transpose()? {
            identities.push(i);
        }
        let ids: Vec<&str> = identities.iter().map(|i| i.id.as_str()).collect();
        let mut cursor = self.templates().find(doc! { "identity": { "$in": ids } }).session(&mut *session).await?;
        let mut by_identity: BTreeMap<String, Vec<TemplateDoc>> = BTreeMap::new();
        while let Some(t) = cursor.next(&mut *session).await.transpose()? {
            by_identity.entry(t.identity.clone()).or_default().push(t);
        }
        let mut entries = Vec::with_capacity(identities.len());
        for i in identities {
            let templates = by_identity.remove(&i.id).unwrap_or_default();
            entries.push(SnapshotEntry { identity: record(&i)?, templates: template_records(&templates) });
        }
        Ok((head.max(0) as u64, entries))
    }
}

/// The protocol record of a stored identity.
pub fn record(i: &IdentityDoc) -> Result<IdentityRecord, StoreError> {
    Ok(IdentityRecord {
        id: IdentityId::new(i.id.clone()).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        name: i.name.clone(),
        valid_from: i.valid_from.map(|ms| ms / 1000),
        valid_until: i.valid_until.map(|ms| ms / 1000),
        version: i.version.max(0) as u64,
    })
}

fn template_records(templates: &[TemplateDoc]) -> Vec<TemplateRecord> {
    templates.iter().map(|t| TemplateRecord { model_id: t.model_id.clone(), vector: t.vector.bytes.clone() }).collect()
}

fn materialize(
    shard: &str,
    entry: &DeltaDoc,
    states: &HashMap<String, (IdentityDoc, Vec<TemplateDoc>)>,
) -> Result<DeltaOp, StoreError> {
    let id = IdentityId::new(entry.identity.clone()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let remove = DeltaOp::Remove { identity: id };
    match (entry.kind, states.get(&entry.identity)) {
        (DeltaKind::Remove, _) | (DeltaKind::Upsert, None) => Ok(remove),
        (DeltaKind::Upsert, Some((identity, _))) if !identity.groups.iter().any(|g| g == shard) => Ok(remove),
        (DeltaKind::Upsert, Some((identity, templates))) => {
            Ok(DeltaOp::Upsert { identity: record(identity)?, templates: template_records(templates) })
        }
    }
}
