//! Audit events from kiosks (stored idempotently: unique `(device, seq)`)
//! and the admin-action trail.

use facegate_protocol::{AuditBatch, AuditEvent, DeviceId};
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};

use super::identities::{Page, page};
use super::{AdminActionDoc, AuditDoc, StageMillisDoc, Store, StoreError, now_millis};

/// What storing a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditStored {
    pub inserted: u64,
    /// Events already stored (a replay).
    pub duplicates: u64,
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
    let t = e.timings_ms;
    Ok(AuditDoc {
        id: format!("{}:{:020}", e.device, e.seq),
        device: e.device.to_string(),
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

impl Store {
    /// Stores a batch of audit events from `device` idempotently: events
    /// already stored (same device and seq) are skipped, so a replayed batch
    /// is harmless. Every event must name `device`.
    pub async fn store_audit_batch(&self, device: &DeviceId, batch: &AuditBatch) -> Result<AuditStored, AuditError> {
        if batch.events.is_empty() {
            return Ok(AuditStored { inserted: 0, duplicates: 0, up_to_seq: None });
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
        let seqs: Vec<i64> = docs.iter().map(|d| d.seq).collect();
        let stored: std::collections::HashSet<i64> = self
            .audit()
            .find(doc! { "device": device.as_str(), "seq": { "$in": seqs } })
            .await
            .map_err(StoreError::from)?
            .try_collect::<Vec<AuditDoc>>()
            .await
            .map_err(StoreError::from)?
            .into_iter()
            .map(|d| d.seq)
            .collect();
        let total = docs.len() as u64;
        docs.retain(|d| !stored.contains(&d.seq));
        if docs.is_empty() {
            return Ok(AuditStored { inserted: 0, duplicates: total, up_to_seq });
        }
        match self.audit().insert_many(&docs).ordered(false).await {
            Ok(r) => {
                let inserted = r.inserted_ids.len() as u64;
                Ok(AuditStored { inserted, duplicates: total - inserted, up_to_seq })
            }
            Err(e) if super::is_duplicate_key(&e) => {
                let mut inserted = 0;
                for d in &docs {
                    match self.audit().insert_one(d).await {
                        Ok(_) => inserted += 1,
                        Err(e) if super::is_duplicate_key(&e) => {}
                        Err(e) => return Err(StoreError::from(e).into()),
                    }
                }
                Ok(AuditStored { inserted, duplicates: total - inserted, up_to_seq })
            }
            Err(e) => Err(StoreError::from(e).into()),
        }
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
