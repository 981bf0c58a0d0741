//! Audit events from kiosks (stored idempotently: unique `(device, epoch,
//! seq)`, the epoch being the kiosk outbox's) and the admin-action trail.
//!
//! A replayed event is a duplicate and stored once. An event whose key is
//! stored already *with other content* (a kiosk database re-created without
//! a new outbox epoch, a bug) is a conflict: the stored event stays, the
//! new one is kept in `audit_conflicts`, and the caller logs and counts it.

use std::collections::HashMap;

use facegate_protocol::{AuditBatch, AuditEvent, DeviceId};
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};

use super::identities::{Page, page};
use super::{AdminActionDoc, AuditDoc, StageMillisDoc, Store, StoreError, now_millis};

/// What storing a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditStored {
    pub inserted: u64,
    /// Events already stored with the same content (a replay).
    pub duplicates: u64,
    /// Events whose key was stored with other content: kept aside in
    /// `audit_conflicts` (see [`AuditStored::conflict_keys`]).
    pub conflicts: u64,
    /// The keys (`_id`s) of those events.
    pub conflict_keys: Vec<String>,
    /// Every event of the batch is stored up to this seq (for `AuditAck`).
    pub up_to_seq: Option<u64>,
}

/// Filters of an audit query; times in milliseconds since the epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    pub device: Option<String>,
    pub identity: Option<String>,
    pub decision: Option<String>,
    /// Inclusive.
    pub from: Option<i64>,
    /// Exclusive.
    pub until: Option<i64>,
    pub limit: usize,
    /// Opaque cursor from the previous page.
    pub after: Option<String>,
}

/// Why an audit batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("event {seq} names device {named}, but came from {from}")]
    WrongDevice { seq: u64, named: String, from: String },
    #[error("event seq {0} is out of range")]
    SeqRange(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn to_doc(e: &AuditEvent, received_at: i64) -> Result<AuditDoc, AuditError> {
    let seq = i64::try_from(e.seq).map_err(|_| AuditError::SeqRange(e.seq))?;
    let epoch = epoch_to_bson(e.epoch);
    let t = e.timings_ms;
    Ok(AuditDoc {
        id: audit_key(&e.device, e.epoch, e.seq),
        device: e.device.to_string(),
        epoch,
        seq,
        at: e.at,
        decision: e.decision.as_str().to_string(),
        identity: e.identity.as_ref().map(ToString::to_string),
        score: e.score.map(f64::from),
        liveness: match e.liveness {
            facegate_protocol::LivenessVerdict::Live => "live",
            facegate_protocol::LivenessVerdict::Spoof => "spoof",
            facegate_protocol::LivenessVerdict::Unsure => "unsure",
        }
        .to_string(),
        liveness_score: e.liveness_score.map(f64::from),
        reason: e.reason.clone(),
        model_id: e.model_id.clone(),
        frames: i64::from(e.frames),
        timings_ms: StageMillisDoc {
            detect: f64::from(t.detect),
            align: f64::from(t.align),
            quality: f64::from(t.quality),
            liveness: f64::from(t.liveness),
            embed: f64::from(t.embed),
            matching: f64::from(t.matching),
        },
        received_at,
    })
}

/// An outbox epoch as a BSON int64, bit for bit: any `u64` the protocol
/// allows is stored (epochs are only ever compared for equality; the `_id`
/// keeps the unsigned spelling).
pub fn epoch_to_bson(epoch: u64) -> i64 {
    i64::from_be_bytes(epoch.to_be_bytes())
}

/// The `_id` of an audit event: epoch-0 events keep the key they had
/// before outbox epochs.
pub fn audit_key(device: &DeviceId, epoch: u64, seq: u64) -> String {
    if epoch == 0 { format!("{device}:{seq:020}") } else { format!("{device}:{epoch:020}:{seq:020}") }
}

/// Whether two stored events say the same (the receipt time aside; floats
/// compared bit for bit, so a NaN equals itself).
fn same_event(a: &AuditDoc, b: &AuditDoc) -> bool {
    let bits = |x: Option<f64>| x.map(f64::to_bits);
    let t = |d: &AuditDoc| {
        let t = &d.timings_ms;
        [t.detect, t.align, t.quality, t.liveness, t.embed, t.matching].map(f64::to_bits)
    };
    a.id == b.id
        && a.device == b.device
        && a.epoch == b.epoch
        && a.seq == b.seq
        && a.at == b.at
        && a.decision == b.decision
        && a.identity == b.identity
        && bits(a.score) == bits(b.score)
        && a.liveness == b.liveness
        && bits(a.liveness_score) == bits(b.liveness_score)
        && a.reason == b.reason
        && a.model_id == b.model_id
        && a.frames == b.frames
        && t(a) == t(b)
}

impl Store {
    fn audit_conflicts(&self) -> mongodb::Collection<Document> {
        self.db.collection("audit_conflicts")
    }

    /// Moves the audit collection to `(device, epoch, seq)` keys: events
    /// stored before epochs get `epoch: 0` (their `_id` stays), and the old
    /// unique `(device, seq)` index, which would refuse a new epoch's
    /// events, is dropped.
    pub(crate) async fn migrate_audit_keys(&self) -> Result<(), StoreError> {
        self.audit().update_many(doc! { "epoch": { "$exists": false } }, doc! { "$set": { "epoch": 0_i64 } }).await?;
        let names = self.audit().list_index_names().await.unwrap_or_default();
        if names.iter().any(|n| n == "device_seq") {
            self.audit().drop_index("device_seq").await?;
            log::info!("audit: the unique (device, seq) index is replaced by (device, epoch, seq)");
        }
        Ok(())
    }

    /// Audit events kept aside because their key was stored with other content.
    pub async fn audit_conflicts_of(&self, device: &str) -> Result<Vec<Document>, StoreError> {
        Ok(self.audit_conflicts().find(doc! { "device": device }).sort(doc! { "_id": 1 }).await?.try_collect().await?)
    }

    /// Stores a batch of audit events from `device` idempotently: events
    /// already stored (same device, outbox epoch and seq, same content) are
    /// skipped, so a replayed batch is harmless; an event whose key is
    /// stored with other content is kept in `audit_conflicts` and reported
    /// in [`AuditStored::conflicts`]. Every event must name `device`.
    pub async fn store_audit_batch(&self, device: &DeviceId, batch: &AuditBatch) -> Result<AuditStored, AuditError> {
        if batch.events.is_empty() {
            return Ok(AuditStored {
                inserted: 0,
                duplicates: 0,
                conflicts: 0,
                conflict_keys: Vec::new(),
                up_to_seq: None,
            });
        }
        let now = now_millis();
        let mut docs = Vec::with_capacity(batch.events.len());
        for e in &batch.events {
            if &e.device != device {
                return Err(AuditError::WrongDevice {
                    seq: e.seq,
                    named: e.device.to_string(),
                    from: device.to_string(),
                });
            }
            docs.push(to_doc(e, now)?);
        }
        let up_to_seq = batch.events.iter().map(|e| e.seq).max();
        // Skip what is stored already, then insert the rest. Servers differ
        // on a duplicate inside an unordered `insertMany` (MongoDB inserts the
        // others, jongodb none), so a race with another replica storing the
        // same replay falls back to one insert per event.
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        let stored: HashMap<String, AuditDoc> = self
            .audit()
            .find(doc! { "_id": Self::one_of(&ids) })
            .await
            .map_err(StoreError::from)?
            .try_collect::<Vec<AuditDoc>>()
            .await
            .map_err(StoreError::from)?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let total = docs.len() as u64;
        let mut fresh = Vec::with_capacity(docs.len());
        let mut conflict_keys = Vec::new();
        for d in docs {
            match stored.get(&d.id) {
                None => fresh.push(d),
                Some(old) if same_event(old, &d) => {}
                Some(old) => {
                    self.keep_conflict(old, &d).await?;
                    conflict_keys.push(d.id);
                }
            }
        }
        let conflicts = conflict_keys.len() as u64;
        let done = |inserted: u64, conflict_keys: Vec<String>| AuditStored {
            inserted,
            duplicates: total - inserted - conflicts,
            conflicts,
            conflict_keys,
            up_to_seq,
        };
        if fresh.is_empty() {
            return Ok(done(0, conflict_keys));
        }
        match self.audit().insert_many(&fresh).ordered(false).await {
            Ok(r) => Ok(done(r.inserted_ids.len() as u64, conflict_keys)),
            Err(e) if super::is_duplicate_key(&e) => {
                let mut inserted = 0;
                for d in &fresh {
                    match self.audit().insert_one(d).await {
                        Ok(_) => inserted += 1,
                        Err(e) if super::is_duplicate_key(&e) => {}
                        Err(e) => return Err(StoreError::from(e).into()),
                    }
                }
                Ok(done(inserted, conflict_keys))
            }
            Err(e) => Err(StoreError::from(e).into()),
        }
    }

    /// Keeps `received` (whose key `stored` holds with other content) in
    /// `audit_conflicts`, once per distinct content.
    async fn keep_conflict(&self, stored: &AuditDoc, received: &AuditDoc) -> Result<(), StoreError> {
        let mut content = received.clone();
        content.received_at = 0;
        let bytes = mongodb::bson::to_vec(&content).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let fingerprint = crate::crypto::hex(&ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()[..8]);
        let received_doc = mongodb::bson::to_document(received).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let conflict = doc! {
            "_id": format!("{}~{fingerprint}", received.id),
            "key": &received.id, "device": &received.device, "epoch": received.epoch, "seq": received.seq,
            "received": received_doc, "stored_received_at": stored.received_at, "at": now_millis(),
        };
        match self.audit_conflicts().insert_one(conflict).await {
            Ok(_) => {}
            // The same conflicting content again: kept once.
            Err(e) if super::is_duplicate_key(&e) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Audit events, newest first, filtered, one page at a time.
    pub async fn query_audit(&self, q: &AuditQuery) -> Result<Page<AuditDoc>, StoreError> {
        let mut filter = Document::new();
        if let Some(d) = &q.device {
            filter.insert("device", d);
        }
        if let Some(i) = &q.identity {
            filter.insert("identity", i);
        }
        if let Some(d) = &q.decision {
            filter.insert("decision", d);
        }
        let mut at = Document::new();
        if let Some(from) = q.from {
            at.insert("$gte", from);
        }
        if let Some(until) = q.until {
            at.insert("$lt", until);
        }
        if !at.is_empty() {
            filter.insert("at", at);
        }
        newest_first(self.audit(), filter, q.after.as_deref(), q.limit, |d| format!("{}~{}", d.at, d.id)).await
    }

    pub async fn count_audit(&self) -> Result<u64, StoreError> {
        Ok(self.audit().estimated_document_count().await?)
    }

    /// The admin-action trail, newest first.
    pub async fn query_admin_actions(
        &self,
        actor: Option<&str>,
        target: Option<&str>,
        limit: usize,
        after: Option<&str>,
    ) -> Result<Page<AdminActionDoc>, StoreError> {
        let mut filter = Document::new();
        if let Some(a) = actor {
            filter.insert("actor", a);
        }
        if let Some(t) = target {
            filter.insert("target", t);
        }
        newest_first(self.admin_actions(), filter, after, limit, |d| format!("{}~{}", d.at, d.id)).await
    }
}

fn parse_cursor(cursor: &str) -> Result<(i64, String), StoreError> {
    let bad = || StoreError::Conflict(format!("invalid page cursor {cursor:?}"));
    let (at, id) = cursor.split_once('~').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.to_string()))
}

/// One page of `collection` matching `filter`, newest first (`at`
/// descending, `_id` ascending among equals), after the keyset cursor
/// `after` (`"{at}~{_id}"`, as `cursor_of` writes it); at most 1000 items.
async fn newest_first<T>(
    collection: mongodb::Collection<T>,
    filter: Document,
    after: Option<&str>,
    limit: usize,
    cursor_of: impl Fn(&T) -> String,
) -> Result<Page<T>, StoreError>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    let filter = match after {
        Some(cursor) => {
            let (at, id) = parse_cursor(cursor)?;
            doc! { "$and": [ filter, { "$or": [ { "at": { "$lt": at } }, { "at": at, "_id": { "$gt": id } } ] } ] }
        }
        None => filter,
    };
    let limit = limit.clamp(1, 1000);
    let items: Vec<T> =
        collection.find(filter).sort(doc! { "at": -1, "_id": 1 }).limit(limit as i64 + 1).await?.try_collect().await?;
    Ok(page(items, limit, cursor_of))
}
