//! Identities, templates, photos and groups: each change is one transaction
//! with its delta-log entries, its change-log entry and its admin-action
//! record.

use futures_util::TryStreamExt;
use mongodb::ClientSession;
use mongodb::bson::{Document, doc};

use super::deltas::DeltaEntry;
use super::{
    AdminActionDoc, ChangeDoc, ChangeOp, DeltaKind, ErasureDoc, GroupDoc, IdentityDoc, PhotoDoc, ShardSeq, Store,
    StoreError, TemplateDoc, in_transaction, now_millis,
};
use crate::store::CHANGES_COUNTER;

/// A new identity, ready to store.
#[derive(Debug, Clone)]
pub struct NewIdentity {
    pub identity: IdentityDoc,
    pub templates: Vec<TemplateDoc>,
    pub photos: Vec<PhotoDoc>,
    pub action: AdminActionDoc,
}

/// What changed in an identity's record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityPatch {
    pub name: Option<String>,
    /// `Some(None)` clears the bound.
    pub valid_from: Option<Option<i64>>,
    pub valid_until: Option<Option<i64>>,
    pub groups: Option<Vec<String>>,
    /// Admitted by a stale door ([`super::docs::IdentityDoc::offline_access`]).
    pub offline_access: Option<bool>,
}

/// The outcome of a forget.
#[derive(Debug, Clone, PartialEq)]
pub struct Forgotten {
    pub shards: Vec<ShardSeq>,
    pub templates: u64,
    pub photos: u64,
}

/// A page of results and the cursor to the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Called inside the transaction once the change-log sequence number is
/// taken, before anything is written: every earlier change has committed, so
/// this is where a caller catches up with other replicas and re-checks
/// (de-duplication). An error aborts the transaction.
pub type Precheck<'a> =
    &'a (dyn Fn(i64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> + Send + Sync);

impl Store {
    async fn check_groups_exist(&self, session: &mut ClientSession, groups: &[String]) -> Result<(), StoreError> {
        for g in groups {
            if self.groups().find_one(doc! { "_id": g }).session(&mut *session).await?.is_none() {
                return Err(StoreError::NotFound { what: "group", id: g.clone() });
            }
        }
        Ok(())
    }

    async fn insert_change(
        &self,
        session: &mut ClientSession,
        seq: i64,
        identity: &str,
        op: ChangeOp,
    ) -> Result<(), StoreError> {
        let change = ChangeDoc { seq, identity: identity.to_string(), op, at: now_millis() };
        match self.changes().insert_one(&change).session(session).await {
            Ok(_) => Ok(()),
            Err(e) if super::is_duplicate_key(&e) => {
                Err(StoreError::SequenceTaken { counter: CHANGES_COUNTER.into(), seq })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stores a new identity with its templates and photos and an `Upsert`
    /// in every shard it belongs to. Returns the change-log sequence number.
    pub async fn create_identity(&self, new: &NewIdentity, precheck: Precheck<'_>) -> Result<i64, StoreError> {
        in_transaction!(self, |session| self.create_identity_in(session, new, precheck).await)
    }

    async fn create_identity_in(
        &self,
        session: &mut ClientSession,
        new: &NewIdentity,
        precheck: Precheck<'_>,
    ) -> Result<i64, StoreError> {
        let seq = self.next_seq(session, CHANGES_COUNTER, 1).await?;
        precheck(seq).await?;
        self.check_groups_exist(session, &new.identity.groups).await?;
        match self.identities().insert_one(&new.identity).session(&mut *session).await {
            Ok(_) => {}
            Err(e) if super::is_duplicate_key(&e) => {
                return Err(StoreError::AlreadyExists { what: "identity", id: new.identity.id.clone() });
            }
            Err(e) => return Err(e.into()),
        }
        self.photos().insert_many(&new.photos).session(&mut *session).await?;
        self.templates().insert_many(&new.templates).session(&mut *session).await?;
        for shard in &new.identity.groups {
            let entry = DeltaEntry {
                kind: DeltaKind::Upsert,
                identity: new.identity.id.clone(),
                version: new.identity.version,
            };
            self.append_deltas_in(session, shard, &[entry]).await?;
        }
        self.insert_change(session, seq, &new.identity.id, ChangeOp::Upsert).await?;
        self.record_action_in(session, &new.action).await?;
        Ok(seq)
    }

    /// Adds templates and photos to an existing identity.
    pub async fn add_photos(
        &self,
        identity: &str,
        templates: &[TemplateDoc],
        photos: &[PhotoDoc],
        action: &AdminActionDoc,
        precheck: Precheck<'_>,
    ) -> Result<IdentityDoc, StoreError> {
        in_transaction!(self, |session| self
            .add_photos_in(session, identity, templates, photos, action, precheck)
            .await)
    }

    async fn add_photos_in(
        &self,
        session: &mut ClientSession,
        identity: &str,
        templates: &[TemplateDoc],
        photos: &[PhotoDoc],
        action: &AdminActionDoc,
        precheck: Precheck<'_>,
    ) -> Result<IdentityDoc, StoreError> {
        let seq = self.next_seq(session, CHANGES_COUNTER, 1).await?;
        precheck(seq).await?;
        let updated = self.bump(session, identity, doc! {}).await?;
        let existing = self.templates().count_documents(doc! { "identity": identity }).session(&mut *session).await?;
        if existing as usize + templates.len() > facegate_protocol::MAX_TEMPLATES_PER_IDENTITY {
            return Err(StoreError::Conflict(format!(
                "identity {identity} has {existing} photos; at most {} are kept",
                facegate_protocol::MAX_TEMPLATES_PER_IDENTITY
            )));
        }
        self.photos().insert_many(photos).session(&mut *session).await?;
        self.templates().insert_many(templates).session(&mut *session).await?;
        self.publish_upsert(session, &updated).await?;
        self.insert_change(session, seq, identity, ChangeOp::Upsert).await?;
        self.record_action_in(session, action).await?;
        Ok(updated)
    }

    /// Increments the version (and applies `set`), returning the new document.
    async fn bump(
        &self,
        session: &mut ClientSession,
        identity: &str,
        set: Document,
    ) -> Result<IdentityDoc, StoreError> {
        let mut set = set;
        set.insert("updated_at", now_millis());
        self.identities()
            .find_one_and_update(doc! { "_id": identity }, doc! { "$inc": { "version": 1i64 }, "$set": set })
            .return_document(mongodb::options::ReturnDocument::After)
            .session(&mut *session)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "identity", id: identity.to_string() })
    }

    /// [`Store::bump`] only if the identity is still at `version` (what the
    /// caller read and checked): a conditional update, so a change that
    /// landed in between (another replica, on a server that does not detect
    /// the write conflict) is retried from the read, never overwritten.
    async fn bump_from(
        &self,
        session: &mut ClientSession,
        identity: &str,
        version: i64,
        set: Document,
    ) -> Result<IdentityDoc, StoreError> {
        let mut set = set;
        set.insert("updated_at", now_millis());
        self.identities()
            .find_one_and_update(
                doc! { "_id": identity, "version": version },
                doc! { "$inc": { "version": 1i64 }, "$set": set },
            )
            .return_document(mongodb::options::ReturnDocument::After)
            .session(&mut *session)
            .await?
            .ok_or_else(|| StoreError::ChangedConcurrently { what: "identity", id: identity.to_string() })
    }

    async fn publish_upsert(&self, session: &mut ClientSession, identity: &IdentityDoc) -> Result<(), StoreError> {
        for shard in &identity.groups {
            let entry =
                DeltaEntry { kind: DeltaKind::Upsert, identity: identity.id.clone(), version: identity.version };
            self.append_deltas_in(session, shard, &[entry]).await?;
        }
        Ok(())
    }

    /// Changes name, validity window or groups: an `Upsert` to every shard
    /// the person is in afterwards, a `Remove` to every shard they left.
    pub async fn update_identity(
        &self,
        identity: &str,
        patch: &IdentityPatch,
        action: &AdminActionDoc,
    ) -> Result<IdentityDoc, StoreError> {
        in_transaction!(self, |session| self.update_identity_in(session, identity, patch, action).await)
    }

    async fn update_identity_in(
        &self,
        session: &mut ClientSession,
        identity: &str,
        patch: &IdentityPatch,
        action: &AdminActionDoc,
    ) -> Result<IdentityDoc, StoreError> {
        let before = self
            .identities()
            .find_one(doc! { "_id": identity })
            .session(&mut *session)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "identity", id: identity.to_string() })?;
        let mut set = Document::new();
        if let Some(name) = &patch.name {
            set.insert("name", name.clone());
        }
        if let Some(from) = patch.valid_from {
            set.insert("valid_from", from);
        }
        if let Some(until) = patch.valid_until {
            set.insert("valid_until", until);
        }
        // The window as it will be stored, checked against the bound read in
        // this transaction (a check before it may have seen an older one).
        let valid_from = patch.valid_from.unwrap_or(before.valid_from);
        let valid_until = patch.valid_until.unwrap_or(before.valid_until);
        if let (Some(valid_from), Some(valid_until)) = (valid_from, valid_until)
            && valid_from >= valid_until
        {
            return Err(StoreError::EmptyWindow { identity: identity.to_string(), valid_from, valid_until });
        }
        if let Some(groups) = &patch.groups {
            self.check_groups_exist(session, groups).await?;
            set.insert("groups", groups.clone());
        }
        if let Some(offline_access) = patch.offline_access {
            set.insert("offline_access", offline_access);
        }
        let seq = self.next_seq(session, CHANGES_COUNTER, 1).await?;
        let after = self.bump_from(session, identity, before.version, set).await?;
        self.publish_upsert(session, &after).await?;
        for left in before.groups.iter().filter(|g| !after.groups.contains(g)) {
            let entry = DeltaEntry { kind: DeltaKind::Remove, identity: identity.to_string(), version: after.version };
            self.append_deltas_in(session, left, &[entry]).await?;
        }
        self.insert_change(session, seq, identity, ChangeOp::Upsert).await?;
        self.record_action_in(session, action).await?;
        Ok(after)
    }

    /// Forgets a person: photos, templates and the record are deleted, a
    /// `Remove` goes to every shard that had them, and an erasure record keeps
    /// the shard sequence numbers so device acknowledgements can be checked.
    pub async fn forget_identity(&self, identity: &str, action: &AdminActionDoc) -> Result<Forgotten, StoreError> {
        in_transaction!(self, |session| self.forget_identity_in(session, identity, action).await)
    }

    async fn forget_identity_in(
        &self,
        session: &mut ClientSession,
        identity: &str,
        action: &AdminActionDoc,
    ) -> Result<Forgotten, StoreError> {
        let before = self
            .identities()
            .find_one_and_delete(doc! { "_id": identity })
            .session(&mut *session)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "identity", id: identity.to_string() })?;
        let seq = self.next_seq(session, CHANGES_COUNTER, 1).await?;
        let templates = self.templates().delete_many(doc! { "identity": identity }).session(&mut *session).await?;
        let photos = self.photos().delete_many(doc! { "identity": identity }).session(&mut *session).await?;
        let mut shards = Vec::new();
        for shard in &before.groups {
            let entry =
                DeltaEntry { kind: DeltaKind::Remove, identity: identity.to_string(), version: before.version + 1 };
            let seqs = self.append_deltas_in(session, shard, &[entry]).await?;
            shards.push(ShardSeq { shard: shard.clone(), seq: seqs.first().copied().unwrap_or(0) });
        }
        let erasure = ErasureDoc {
            identity: identity.to_string(),
            requested_at: now_millis(),
            requested_by: action.actor.clone(),
            shards: shards.clone(),
        };
        self.erasures().replace_one(doc! { "_id": identity }, &erasure).upsert(true).session(&mut *session).await?;
        self.insert_change(session, seq, identity, ChangeOp::Remove).await?;
        self.record_action_in(session, action).await?;
        Ok(Forgotten { shards, templates: templates.deleted_count, photos: photos.deleted_count })
    }

    /// Deletes one photo and its template; an identity keeps at least one.
    pub async fn delete_photo(&self, identity: &str, photo: &str, action: &AdminActionDoc) -> Result<(), StoreError> {
        in_transaction!(self, |session| self.delete_photo_in(session, identity, photo, action).await)
    }

    async fn delete_photo_in(
        &self,
        session: &mut ClientSession,
        identity: &str,
        photo: &str,
        action: &AdminActionDoc,
    ) -> Result<(), StoreError> {
        let count = self.photos().count_documents(doc! { "identity": identity }).session(&mut *session).await?;
        let found = self.photos().find_one(doc! { "_id": photo, "identity": identity }).session(&mut *session).await?;
        if found.is_none() {
            return Err(StoreError::NotFound { what: "photo", id: photo.to_string() });
        }
        if count <= 1 {
            return Err(StoreError::Conflict(format!(
                "photo {photo} is the last photo of identity {identity}; delete the identity to forget the person"
            )));
        }
        let seq = self.next_seq(session, CHANGES_COUNTER, 1).await?;
        self.photos().delete_one(doc! { "_id": photo }).session(&mut *session).await?;
        self.templates().delete_many(doc! { "photo": photo }).session(&mut *session).await?;
        let after = self.bump(session, identity, doc! {}).await?;
        self.publish_upsert(session, &after).await?;
        self.insert_change(session, seq, identity, ChangeOp::Upsert).await?;
        self.record_action_in(session, action).await?;
        Ok(())
    }

    pub async fn identity(&self, id: &str) -> Result<Option<IdentityDoc>, StoreError> {
        Ok(self.identities().find_one(doc! { "_id": id }).await?)
    }

    /// Identities ordered by id, `limit` at a time, after the cursor `after`.
    pub async fn list_identities(
        &self,
        after: Option<&str>,
        limit: usize,
        group: Option<&str>,
    ) -> Result<Page<IdentityDoc>, StoreError> {
        let mut filter = Document::new();
        if let Some(after) = after {
            filter.insert("_id", doc! { "$gt": after });
        }
        if let Some(group) = group {
            filter.insert("groups", group);
        }
        let limit = limit.clamp(1, 1000);
        let items: Vec<IdentityDoc> =
            self.identities().find(filter).sort(doc! { "_id": 1 }).limit(limit as i64 + 1).await?.try_collect().await?;
        Ok(page(items, limit, |i| i.id.clone()))
    }

    pub async fn count_identities(&self) -> Result<u64, StoreError> {
        Ok(self.identities().count_documents(doc! {}).await?)
    }

    /// Photo metadata (no ciphertext) of an identity.
    pub async fn photos_of(&self, identity: &str) -> Result<Vec<PhotoDoc>, StoreError> {
        Ok(self
            .photos()
            .find(doc! { "identity": identity })
            .sort(doc! { "created_at": 1, "_id": 1 })
            .await?
            .try_collect()
            .await?)
    }

    pub async fn photo(&self, identity: &str, photo: &str) -> Result<Option<PhotoDoc>, StoreError> {
        Ok(self.photos().find_one(doc! { "_id": photo, "identity": identity }).await?)
    }

    /// Templates of one identity made by `model_id`.
    pub async fn templates_of(&self, identity: &str, model_id: &str) -> Result<Vec<TemplateDoc>, StoreError> {
        Ok(self
            .templates()
            .find(doc! { "identity": identity, "model_id": model_id })
            .sort(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?)
    }

    /// Up to `limit` templates of `model_id` with `_id` after `after`, in
    /// `_id` order (index rebuild, page by page; see [`Store::page_by_id`]).
    pub async fn templates_page(
        &self,
        model_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TemplateDoc>, StoreError> {
        Self::page_by_id(&self.templates(), doc! { "model_id": model_id }, after, limit).await
    }

    /// Change-log entries with `seq > after`, oldest first.
    pub async fn changes_after(&self, after: i64, limit: usize) -> Result<Vec<ChangeDoc>, StoreError> {
        Ok(self
            .changes()
            .find(doc! { "_id": { "$gt": after } })
            .sort(doc! { "_id": 1 })
            .limit(limit.clamp(1, 100_000) as i64)
            .await?
            .try_collect()
            .await?)
    }

    /// Whether the change log removes `identity` after change `seq`.
    pub async fn removed_after(&self, identity: &str, seq: i64) -> Result<bool, StoreError> {
        let found =
            self.changes().find_one(doc! { "identity": identity, "op": "remove", "_id": { "$gt": seq } }).await?;
        Ok(found.is_some())
    }

    /// The erasure record of a forgotten identity.
    pub async fn erasure(&self, identity: &str) -> Result<Option<ErasureDoc>, StoreError> {
        Ok(self.erasures().find_one(doc! { "_id": identity }).await?)
    }

    pub async fn create_group(&self, group: &GroupDoc, action: &AdminActionDoc) -> Result<(), StoreError> {
        in_transaction!(self, |session| async {
            match self.groups().insert_one(group).session(&mut *session).await {
                Ok(_) => {}
                Err(e) if super::is_duplicate_key(&e) => {
                    return Err(StoreError::AlreadyExists { what: "group", id: group.id.clone() });
                }
                Err(e) => return Err(e.into()),
            }
            self.record_action_in(session, action).await
        }
        .await)
    }

    pub async fn group(&self, id: &str) -> Result<Option<GroupDoc>, StoreError> {
        Ok(self.groups().find_one(doc! { "_id": id }).await?)
    }

    pub async fn list_groups(&self) -> Result<Vec<GroupDoc>, StoreError> {
        Ok(self.groups().find(doc! {}).sort(doc! { "_id": 1 }).await?.try_collect().await?)
    }

    /// Deletes a group with no members and no devices.
    pub async fn delete_group(&self, id: &str, action: &AdminActionDoc) -> Result<(), StoreError> {
        in_transaction!(self, |session| async {
            let members = self.identities().count_documents(doc! { "groups": id }).session(&mut *session).await?;
            let devices = self.devices().count_documents(doc! { "groups": id }).session(&mut *session).await?;
            if members > 0 || devices > 0 {
                return Err(StoreError::Conflict(format!(
                    "group {id} still has {members} members and {devices} devices; remove them first"
                )));
            }
            let deleted = self.groups().delete_one(doc! { "_id": id }).session(&mut *session).await?;
            if deleted.deleted_count == 0 {
                return Err(StoreError::NotFound { what: "group", id: id.to_string() });
            }
            self.record_action_in(session, action).await
        }
        .await)
    }

    /// Adds (`member`) or removes an identity from a group.
    pub async fn set_membership(
        &self,
        group: &str,
        identity: &str,
        member: bool,
        action: &AdminActionDoc,
    ) -> Result<IdentityDoc, StoreError> {
        let current = self
            .identity(identity)
            .await?
            .ok_or_else(|| StoreError::NotFound { what: "identity", id: identity.into() })?;
        let mut groups = current.groups.clone();
        groups.retain(|g| g != group);
        if member {
            groups.push(group.to_string());
            groups.sort();
        }
        let patch = IdentityPatch { groups: Some(groups), ..IdentityPatch::default() };
        self.update_identity(identity, &patch, action).await
    }
}

/// Cuts `items` (fetched with one extra) to `limit` and names the cursor.
pub(crate) fn page<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(key)
    } else {
        None
    };
    Page { items, next }
}

impl Store {
    /// Display names of the given identities (missing ones are absent).
    pub async fn names_of(&self, ids: &[&str]) -> Result<std::collections::HashMap<String, String>, StoreError> {
        if ids.is_empty() {
            return Ok(std::collections::HashMap::new());
        }
        let found: Vec<IdentityDoc> =
            self.identities().find(doc! { "_id": Self::one_of(ids) }).await?.try_collect().await?;
        Ok(found.into_iter().map(|i| (i.id, i.name)).collect())
    }
}
