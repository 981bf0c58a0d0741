//! Administrators, operators and auditors.

use futures_util::TryStreamExt;
use mongodb::bson::doc;

use super::{Store, StoreError, UserDoc};

impl Store {
    /// Creates a user; refuses an existing name.
    pub async fn create_user(&self, user: &UserDoc) -> Result<(), StoreError> {
        match self.users().insert_one(user).await {
            Ok(_) => Ok(()),
            Err(e) if super::is_duplicate_key(&e) => {
                Err(StoreError::AlreadyExists { what: "user", id: user.name.clone() })
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user(&self, name: &str) -> Result<Option<UserDoc>, StoreError> {
        Ok(self.users().find_one(doc! { "_id": name }).await?)
    }

    pub async fn list_users(&self) -> Result<Vec<UserDoc>, StoreError> {
        Ok(self.users().find(doc! {}).sort(doc! { "_id": 1 }).await?.try_collect().await?)
    }

    pub async fn count_users(&self) -> Result<u64, StoreError> {
        Ok(self.users().count_documents(doc! {}).await?)
    }
}
