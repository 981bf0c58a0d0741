//! The log epoch: a random non-zero number kept in `sync_meta` (`_id` =
//! `"epoch"`), created on first use. Sequence numbers of the delta log are
//! only meaningful within one epoch; every published [`facegate_protocol::DeltaBatch`],
//! snapshot and freshness proof carries it, and a device of another epoch
//! forgets its synced shards and fetches them anew.
//!
//! After a database restore the log may go back (devices would be *ahead*
//! of it): an operator then starts a new epoch
//! (`facegate-sync-server sync new-epoch`), which also forgets every
//! device's recorded applied seqs — they belong to the old epoch.

use mongodb::bson::{Document, doc};

use super::{Store, StoreError, is_duplicate_key, now_millis};

const EPOCH_ID: &str = "epoch";

/// A random epoch in `1..=i64::MAX` (stored as a BSON int64).
fn random_epoch() -> Result<u64, StoreError> {
    loop {
        let bytes = crate::crypto::random_bytes::<8>()?;
        let epoch = u64::from_le_bytes(bytes) & (i64::MAX as u64);
        if epoch != 0 {
            return Ok(epoch);
        }
    }
}

fn epoch_of(d: &Document) -> Result<u64, StoreError> {
    d.get_i64("epoch")
        .ok()
        .and_then(|e| u64::try_from(e).ok())
        .filter(|e| *e != 0)
        .ok_or_else(|| StoreError::Corrupt("sync_meta epoch is not a positive int64".into()))
}

impl Store {
    fn sync_meta(&self) -> mongodb::Collection<Document> {
        self.db.collection("sync_meta")
    }

    /// The current log epoch, created (random, non-zero) on first call.
    pub async fn log_epoch(&self) -> Result<u64, StoreError> {
        if let Some(d) = self.sync_meta().find_one(doc! { "_id": EPOCH_ID }).await? {
            return epoch_of(&d);
        }
        let epoch = random_epoch()?;
        let value = i64::try_from(epoch).map_err(|_| StoreError::Corrupt("epoch out of range".into()))?;
        match self.sync_meta().insert_one(doc! { "_id": EPOCH_ID, "epoch": value, "started_at": now_millis() }).await {
            Ok(_) => Ok(epoch),
            // Another replica created it first: theirs counts.
            Err(e) if is_duplicate_key(&e) => {
                let d = self
                    .sync_meta()
                    .find_one(doc! { "_id": EPOCH_ID })
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("sync_meta epoch vanished".into()))?;
                epoch_of(&d)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a new log epoch (after a database restore): a fresh random
    /// number, and every device's recorded applied seqs forgotten (they
    /// belong to the old epoch). Returns (old, new).
    pub async fn start_new_epoch(&self, actor: &str) -> Result<(u64, u64), StoreError> {
        let old = self.log_epoch().await?;
        let mut new = random_epoch()?;
        while new == old {
            new = random_epoch()?;
        }
        let value = i64::try_from(new).map_err(|_| StoreError::Corrupt("epoch out of range".into()))?;
        self.sync_meta()
            .update_one(
                doc! { "_id": EPOCH_ID },
                doc! { "$set": { "epoch": value, "started_at": now_millis(), "started_by": actor } },
            )
            .upsert(true)
            .await?;
        self.devices().update_many(doc! {}, doc! { "$set": { "applied": Document::new() } }).await?;
        Ok((old, new))
    }
}
