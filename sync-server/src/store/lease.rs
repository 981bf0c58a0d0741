//! Leases: one holder at a time for a named job across replicas (the delta
//! publisher), a document in `sync_leases` renewed by its holder.

use mongodb::bson::{Document, doc};

use super::{Store, StoreError, now_millis};

impl Store {
    fn leases(&self) -> mongodb::Collection<Document> {
        self.db.collection("sync_leases")
    }

    /// Takes or renews lease `id` for `holder` until `ttl_ms` from now;
    /// whether `holder` holds it.
    pub async fn renew_lease(&self, id: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let now = now_millis();
        let initial = doc! { "_id": id, "holder": "", "expires_at": 0_i64 };
        if let Err(e) = self.leases().insert_one(initial).await {
            let e = StoreError::from(e);
            if !e.is_duplicate_key() {
                return Err(e);
            }
        }
        let taken = self
            .leases()
            .update_one(
                doc! { "_id": id, "$or": [ { "holder": holder }, { "expires_at": { "$lt": now } } ] },
                doc! { "$set": { "holder": holder, "expires_at": now.saturating_add(ttl_ms) } },
            )
            .await?;
        Ok(taken.matched_count == 1)
    }

    /// Gives lease `id` up if `holder` holds it.
    pub async fn release_lease(&self, id: &str, holder: &str) -> Result<(), StoreError> {
        self.leases()
            .update_one(doc! { "_id": id, "holder": holder }, doc! { "$set": { "expires_at": 0_i64 } })
            .await?;
        Ok(())
    }
}
