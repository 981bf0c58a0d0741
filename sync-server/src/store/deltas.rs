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

use facegate_protocol::{
    DeltaBatch, DeltaOp, IdentityId, IdentityRecord, MAX_TEMPLATES_PER_IDENTITY, ShardId, SnapshotEntry, TemplateRecord,
};
use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::doc;

use super::{
    DeltaDoc, DeltaKind, DeviceDoc, IdentityDoc, Store, StoreError, TemplateDoc, in_transaction, now_millis,
    seq_from_i64, seq_to_i64,
};

/// How long a delta entry whose identity state is not visible yet is held
/// back from publication (see `Store::not_yet_visible`).
pub const SETTLE_MS: i64 = 10_000;

/// Identities read per page of a snapshot (each page one reply).
const SNAPSHOT_PAGE: usize = 1000;

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

    /// The latest sequence number of each of `shards` in one read (a shard
    /// whose log is empty maps to 0).
    pub async fn shard_heads(&self, shards: &[&str]) -> Result<HashMap<String, u64>, StoreError> {
        let counters: HashMap<String, &str> = shards.iter().map(|s| (shard_counter(s), *s)).collect();
        let mut heads: HashMap<String, u64> = shards.iter().map(|s| (s.to_string(), 0)).collect();
        let names: Vec<&String> = counters.keys().collect();
        let mut cursor = self.counters().find(doc! { "_id": { "$in": names } }).await?;
        while let Some(d) = cursor.try_next().await? {
            let name = d.get_str("_id").map_err(|_| StoreError::Corrupt("a counter without a string _id".into()))?;
            if let Some(shard) = counters.get(name) {
                heads.insert(shard.to_string(), super::counter_value(&d, name)?.max(0) as u64);
            }
        }
        Ok(heads)
    }

    /// Raw log entries of `shard` with `after < seq`, oldest first, at most
    /// `limit`. An `after` beyond `i64::MAX` is [`StoreError::SeqOutOfRange`].
    pub async fn delta_entries_after(
        &self,
        shard: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DeltaDoc>, StoreError> {
        let after = seq_to_i64(after)?;
        let cursor = self
            .deltas()
            .find(doc! { "shard": shard, "seq": { "$gt": after } })
            .sort(doc! { "seq": 1 })
            .limit(limit.clamp(1, 10_000) as i64)
            .await?;
        Ok(cursor.try_collect().await?)
    }

    /// The deltas of `shard` after `after_seq`, at most `limit` entries, as a
    /// [`DeltaBatch`] of the current log epoch from `after_seq` to the last
    /// entry read. `None` when there is nothing new (also at `i64::MAX`,
    /// past which no entry can be). A device at `after_seq` applies it as
    /// is. An `after_seq` beyond `i64::MAX` is [`StoreError::SeqOutOfRange`].
    pub async fn read_deltas_after(
        &self,
        shard: &ShardId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Option<DeltaBatch>, StoreError> {
        let Some(first) = seq_to_i64(after_seq)?.checked_add(1) else {
            return Ok(None);
        };
        let entries = self.delta_entries_after(shard.as_str(), after_seq, limit).await?;
        // The log must be contiguous from after_seq: a hole means a writer
        // has not committed yet (cannot happen with the counter in the
        // transaction, but never hand a device a batch with a hole).
        let contiguous: Vec<&DeltaDoc> = entries
            .iter()
            .zip(first..)
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
        let epoch = self.log_epoch().await?;
        Ok(Some(DeltaBatch { shard: shard.clone(), epoch, base_seq: after_seq, seq: seq_from_i64(last)?, ops }))
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
            self.identities().find(doc! { "_id": Self::one_of(ids) }).await?.try_collect().await?;
        let templates: Vec<TemplateDoc> = self
            .templates()
            .find(doc! { "identity": Self::one_of(ids) })
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

    /// Every identity of `shard` with its templates, and the sequence
    /// number the device continues from after applying them.
    ///
    /// The label is the publisher's position (at most the shard's head), read
    /// *before* the state: every entry up to it was read by the publisher with
    /// its identity state visible, so the state read afterwards includes it.
    /// The state may also include later changes; the deltas after the label
    /// then re-apply them, and since each delta carries an identity's
    /// current state (or its removal) the device converges on the head. No
    /// transaction: a 100k-template shard is read in pages of single
    /// replies, under MongoDB's transaction time limit or not.
    pub async fn shard_snapshot(&self, shard: &ShardId) -> Result<(u64, Vec<SnapshotEntry>), StoreError> {
        self.shard_snapshot_paged(shard, SNAPSHOT_PAGE).await
    }

    /// [`Store::shard_snapshot`], `page` identities per read (tests use small pages).
    pub async fn shard_snapshot_paged(
        &self,
        shard: &ShardId,
        page: usize,
    ) -> Result<(u64, Vec<SnapshotEntry>), StoreError> {
        // At most 5,000: a page's templates (16 per identity at most) must fit
        // one `page_by_id` read.
        let page = page.clamp(1, 5_000);
        let label = self.published_seq(shard).await?.min(self.shard_head(shard).await?);
        let mut entries = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let identities: Vec<IdentityDoc> =
                Self::page_by_id(&self.identities(), doc! { "groups": shard.as_str() }, after.as_deref(), page).await?;
            let Some(last) = identities.last() else { break };
            after = Some(last.id.clone());
            let ids: Vec<&str> = identities.iter().map(|i| i.id.as_str()).collect();
            let most = ids.len() * MAX_TEMPLATES_PER_IDENTITY;
            let filter = doc! { "identity": Self::one_of(&ids) };
            let templates: Vec<TemplateDoc> = Self::page_by_id(&self.templates(), filter, None, most).await?;
            let mut by_identity: HashMap<String, Vec<TemplateDoc>> = HashMap::new();
            for t in templates {
                by_identity.entry(t.identity.clone()).or_default().push(t);
            }
            let full = identities.len() == page;
            for i in identities {
                let templates = by_identity.remove(&i.id).unwrap_or_default();
                entries.push(SnapshotEntry { identity: record(&i)?, templates: template_records(&templates) });
            }
            if !full {
                break;
            }
        }
        Ok((label, entries))
    }

    /// The last seq of `shard` the publisher has published (0: none yet).
    pub async fn published_seq(&self, shard: &ShardId) -> Result<u64, StoreError> {
        let stored = self.published().find_one(doc! { "_id": shard.as_str() }).await?;
        Ok(stored.map_or(0, |d| d.get_i64("seq").or_else(|_| d.get_i32("seq").map(i64::from)).unwrap_or(0)).max(0)
            as u64)
    }

    /// Records that the publisher `by` has published `shard` up to `seq`.
    pub async fn record_published(&self, shard: &ShardId, seq: u64, by: &str) -> Result<(), StoreError> {
        let value = seq_to_i64(seq)?;
        self.published()
            .update_one(doc! { "_id": shard.as_str() }, doc! { "$set": { "seq": value, "by": by, "at": now_millis() } })
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Deletes the log entries of `shard` that no device needs any more:
    /// published, and either applied by every active device of the shard or
    /// older than `max_age_ms`. A device behind what is left gets a snapshot
    /// when it resyncs. Only the publisher calls this (it passes its position).
    pub async fn compact_delta_log(
        &self,
        shard: &ShardId,
        published: u64,
        max_age_ms: i64,
        now: i64,
    ) -> Result<Compaction, StoreError> {
        let devices: Vec<DeviceDoc> =
            self.devices().find(doc! { "groups": shard.as_str(), "state": "active" }).await?.try_collect().await?;
        let applied = devices
            .iter()
            .map(|d| {
                let seq =
                    d.applied.get_i64(shard.as_str()).or_else(|_| d.applied.get_i32(shard.as_str()).map(i64::from));
                seq.unwrap_or(0).max(0) as u64
            })
            .min();
        let aged = self
            .deltas()
            .find_one(doc! { "shard": shard.as_str(), "at": { "$lt": now.saturating_sub(max_age_ms) } })
            .sort(doc! { "seq": -1 })
            .await?
            .map_or(0, |d| d.seq.max(0) as u64);
        let floor = compaction_floor(published, applied, aged);
        if floor == 0 {
            return Ok(Compaction { floor, deleted: 0 });
        }
        let floor_i64 = seq_to_i64(floor)?;
        let deleted = self.deltas().delete_many(doc! { "shard": shard.as_str(), "seq": { "$lte": floor_i64 } }).await?;
        Ok(Compaction { floor, deleted: deleted.deleted_count })
    }
}

/// What one compaction of a shard's log did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Entries up to this seq are gone (0: nothing was compacted).
    pub floor: u64,
    pub deleted: u64,
}

/// The highest seq a shard's log may be compacted to: never beyond what is
/// published; up to the lowest seq every active device has applied (all of
/// it when the shard has no device: a new one starts from a snapshot), or
/// further, up to the newest entry older than the age limit.
pub fn compaction_floor(published: u64, lowest_applied: Option<u64>, newest_aged: u64) -> u64 {
    lowest_applied.unwrap_or(published).max(newest_aged).min(published)
}

/// What an empty validity window is published as: valid until the epoch,
/// so no door admits the person at any time.
pub const NEVER_VALID_UNTIL: i64 = 0;

/// The protocol record of a stored identity.
///
/// Always one a device accepts: the window is narrowed to whole seconds
/// (start rounded up, end down, so a door never admits early or late), and
/// a window that is then empty — stored by an older server, or narrower
/// than a second — is published as [`NEVER_VALID_UNTIL`] rather than as a
/// record the codec refuses, which would hold back every delta and
/// snapshot of the shard on every door.
pub fn record(i: &IdentityDoc) -> Result<IdentityRecord, StoreError> {
    let mut valid_from = i.valid_from.map(|ms| ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0));
    let mut valid_until = i.valid_until.map(|ms| ms.div_euclid(1000));
    if let (Some(from), Some(until)) = (valid_from, valid_until)
        && from >= until
    {
        log::warn!(identity = i.id.as_str(), valid_from:? = i.valid_from, valid_until:? = i.valid_until;
            "identity with an empty validity window: published as never valid; correct it with PATCH /v1/identities/{{id}}");
        valid_from = None;
        valid_until = Some(NEVER_VALID_UNTIL);
    }
    Ok(IdentityRecord {
        id: IdentityId::new(i.id.clone()).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        name: i.name.clone(),
        valid_from,
        valid_until,
        version: i.version.max(0) as u64,
        offline_access: i.offline_access,
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

#[cfg(test)]
mod tests {
    use super::compaction_floor;

    #[test]
    fn the_floor_follows_the_slowest_device_or_the_age_limit_and_never_passes_the_publisher() {
        assert_eq!(compaction_floor(10, Some(4), 0), 4, "the slowest active device");
        assert_eq!(compaction_floor(10, Some(4), 7), 7, "aged out although a device lags");
        assert_eq!(compaction_floor(10, Some(12), 0), 10, "devices ahead of the publisher");
        assert_eq!(compaction_floor(10, Some(4), 15), 10, "aged but unpublished");
        assert_eq!(compaction_floor(10, None, 0), 10, "no device: a new one starts from a snapshot");
        assert_eq!(compaction_floor(0, Some(3), 3), 0, "nothing published, nothing compacted");
    }
}
