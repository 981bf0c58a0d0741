//! MongoDB, the system of record.
//!
//! | collection | holds | key / indexes |
//! | --- | --- | --- |
//! | `identities` | people: name, validity window, groups, version | `_id` = identity id; `groups` |
//! | `templates` | one template per usable photo, tagged with `model_id` | `_id`; `(model_id, identity)` |
//! | `photos` | enrollment photos, AES-256-GCM sealed | `_id`; `identity` |
//! | `groups` | gallery shards: the people allowed at a set of doors | `_id` = shard id |
//! | `devices` | kiosks: state, groups, uplink key, assignment version, shards taken away, applied seq per shard | `_id` = device id; `groups`; `assignment_pending` |
//! | `deltas` | per-shard delta log (`Upsert`/`Remove` of an identity) | unique `(shard, seq)`; `identity` |
//! | `changes` | global change log the master index follows | `_id` = seq |
//! | `audit` | door decisions from kiosks | unique `(device, epoch, seq)`; `(at)`, `(device, at)`, `(identity, at)`, `(decision, at)` |
//! | `admin_actions` | every administrative action | `(at)`, `(actor, at)` |
//! | `users` | administrators, operators, auditors (argon2) | `_id` = user name |
//! | `erasures` | forgotten identities: which shard seq removed them | `_id` = identity id |
//! | `audit_conflicts` | audit events that reused a stored key with other content | `_id` = key and fingerprint |
//! | `sync_meta` | the log epoch | `_id` = `"epoch"` |
//! | `sync_leases` | the delta-publisher lease | `_id` = lease name |
//! | `counters` | sequence numbers (`findOneAndUpdate($inc)`) | `_id` = counter name |
//! | `meta` | schema version | `_id` = `"schema"` |
//!
//! Every change to identities, templates and photos happens in one
//! transaction together with its delta-log entries, its change-log entry and
//! its admin-action record, so a crash leaves either all or none of it.
//! Sequence numbers are taken inside that transaction from
//! `findOneAndUpdate($inc)` on a counter document: concurrent writers (on any
//! replica) conflict on that document, one of them retries, and entries
//! therefore become visible in sequence order, without gaps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};

pub mod audit;
pub mod commands;
pub mod deltas;
pub mod devices;
pub mod docs;
pub mod identities;
pub mod lease;
pub mod sync_meta;
pub mod users;

pub use docs::*;

/// Version of the collection layout this code writes.
/// 2: audit events keyed by `(device, epoch, seq)`.
pub const SCHEMA_VERSION: i64 = 2;
/// Counter of the global change log.
pub const CHANGES_COUNTER: &str = "changes";
/// Attempts of a transaction that keeps failing with transient errors.
const TRANSACTION_ATTEMPTS: u32 = 40;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] mongodb::error::Error),
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("{what} {id} already exists")]
    AlreadyExists { what: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("the database reports schema version {found}; this server writes version {SCHEMA_VERSION}")]
    SchemaTooNew { found: i64 },
    /// Another transaction committed the same sequence number first (a
    /// server that checks write conflicts only at commit lets two
    /// transactions read the same counter value); retrying takes the next.
    #[error("sequence number {seq} of {counter} was taken by a concurrent transaction")]
    SequenceTaken { counter: String, seq: i64 },
    #[error("transaction still conflicting after {TRANSACTION_ATTEMPTS} attempts")]
    Contention,
    /// The document changed between the transaction's read and its write
    /// (a conditional update matched nothing); retrying re-reads it.
    #[error("{what} {id} was changed by a concurrent transaction")]
    ChangedConcurrently { what: &'static str, id: String },
    /// The validity window a change would leave is empty: checked inside
    /// the transaction against the stored other bound, so two concurrent
    /// changes of one bound each cannot store it.
    #[error("identity {identity}: valid_until ({valid_until} ms) must be later than valid_from ({valid_from} ms)")]
    EmptyWindow { identity: String, valid_from: i64, valid_until: i64 },
    /// A sequence number the database cannot store (above `i64::MAX`).
    #[error("sequence number {0} is out of range: the largest is {max}", max = i64::MAX)]
    SeqOutOfRange(u64),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
}

impl StoreError {
    /// A transaction may be retried from the start.
    ///
    /// MongoDB labels such errors `TransientTransactionError`. Servers that
    /// detect write conflicts only at commit (jongodb, measured in
    /// `tests/store.rs`) answer the commit with a bare `WriteConflict` (112)
    /// and no label; that is just as safe to retry.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => {
                e.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR) || command_code(e) == Some(WRITE_CONFLICT)
            }
            Self::SequenceTaken { .. } | Self::ChangedConcurrently { .. } => true,
            _ => false,
        }
    }

    /// `E11000`.
    pub fn is_duplicate_key(&self) -> bool {
        match self {
            Self::Database(e) => is_duplicate_key(e),
            _ => false,
        }
    }
}

/// Server error code of a write conflict between transactions.
const WRITE_CONFLICT: i32 = 112;

fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

pub(crate) fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        ErrorKind::InsertMany(m) => {
            m.write_errors.as_ref().is_some_and(|w| !w.is_empty() && w.iter().all(|w| w.code == 11000))
        }
        _ => false,
    }
}

/// A device- or log-side sequence number as the database stores it:
/// refused, never wrapped or clamped, above `i64::MAX`.
pub fn seq_to_i64(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::SeqOutOfRange(seq))
}

/// A stored sequence number as the protocol carries it; a negative one is
/// corrupt data.
pub fn seq_from_i64(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative sequence number {seq}")))
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Runs `$body` (an expression using `$session: &mut ClientSession`) in a
/// transaction, retrying the whole body on transient errors and the commit
/// on an unknown commit result, as the MongoDB drivers specify.
macro_rules! in_transaction {
    ($store:expr, |$session:ident| $body:expr) => {{
        let store: &$crate::store::Store = $store;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let writing = store.writing().await;
            let mut session_value = store.client().start_session().await?;
            session_value.start_transaction().await?;
            let $session = &mut session_value;
            let result = $body;
            match result {
                Ok(value) => match $crate::store::commit(&mut session_value).await {
                    Ok(()) => break Ok(value),
                    Err(e) if e.is_transient() && attempt < $crate::store::transaction_attempts() => {
                        drop(writing);
                        $crate::store::backoff(attempt).await;
                    }
                    Err(e) => break Err(e),
                },
                Err(e) => {
                    let _ = session_value.abort_transaction().await;
                    let e: $crate::store::StoreError = e;
                    if e.is_transient() && attempt < $crate::store::transaction_attempts() {
                        drop(writing);
                        $crate::store::backoff(attempt).await;
                    } else if e.is_transient() {
                        break Err($crate::store::StoreError::Contention);
                    } else {
                        break Err(e);
                    }
                }
            }
        }
    }};
}
pub(crate) use in_transaction;

#[doc(hidden)]
pub fn transaction_attempts() -> u32 {
    TRANSACTION_ATTEMPTS
}

#[doc(hidden)]
pub async fn commit(session: &mut ClientSession) -> Result<(), StoreError> {
    for _ in 0..5 {
        match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(e) if e.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    session.commit_transaction().await.map_err(Into::into)
}

#[doc(hidden)]
pub async fn backoff(attempt: u32) {
    let jitter = crate::crypto::random_bytes::<1>().map_or(0, |b| u64::from(b[0]) % 8);
    tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 3 + jitter)).await;
}

/// The database handle and its collections.
///
/// Transactions of one `Store` (and its clones: one server process) run one
/// at a time. Across replicas, MongoDB's write-conflict detection on the
/// counter documents orders them; within a process the lock does, which
/// also keeps a single server correct on MongoDB-protocol servers that do
/// not detect write conflicts reliably (jongodb 0.1.6, the test database:
/// six tasks committing 180 transactional `$inc`s saw 50 distinct values).
/// Enrollment spends ~100 ms in the face pipeline and a few ms in its
/// transaction, so the lock costs little.
#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    db: Database,
    writes: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Connects (lazily: the first operation waits for a server).
    pub async fn connect(
        uri: &str,
        database: &str,
        max_pool_size: u32,
        selection_timeout: Duration,
        pool_events: Option<mongodb::event::EventHandler<mongodb::event::cmap::CmapEvent>>,
    ) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(uri).await?;
        options.app_name = Some("facegate-sync-server".into());
        options.max_pool_size = Some(max_pool_size);
        options.server_selection_timeout = Some(selection_timeout);
        options.cmap_event_handler = pool_events;
        let client = Client::with_options(options)?;
        let db = client.database(database);
        Ok(Self { client, db, writes: std::sync::Arc::default() })
    }

    /// Held for one transaction attempt (see the type's documentation).
    #[doc(hidden)]
    pub async fn writing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub(crate) fn identities(&self) -> Collection<IdentityDoc> {
        self.db.collection("identities")
    }
    pub(crate) fn templates(&self) -> Collection<TemplateDoc> {
        self.db.collection("templates")
    }
    pub(crate) fn photos(&self) -> Collection<PhotoDoc> {
        self.db.collection("photos")
    }
    pub(crate) fn groups(&self) -> Collection<GroupDoc> {
        self.db.collection("groups")
    }
    pub(crate) fn devices(&self) -> Collection<DeviceDoc> {
        self.db.collection("devices")
    }
    pub(crate) fn deltas(&self) -> Collection<DeltaDoc> {
        self.db.collection("deltas")
    }
    pub(crate) fn changes(&self) -> Collection<ChangeDoc> {
        self.db.collection("changes")
    }
    pub(crate) fn audit(&self) -> Collection<AuditDoc> {
        self.db.collection("audit")
    }
    pub(crate) fn admin_actions(&self) -> Collection<AdminActionDoc> {
        self.db.collection("admin_actions")
    }
    pub(crate) fn users(&self) -> Collection<UserDoc> {
        self.db.collection("users")
    }
    pub(crate) fn erasures(&self) -> Collection<ErasureDoc> {
        self.db.collection("erasures")
    }
    pub(crate) fn counters(&self) -> Collection<Document> {
        self.db.collection("counters")
    }
    /// Shard → last delta seq the publisher has published.
    pub(crate) fn published(&self) -> Collection<Document> {
        self.db.collection("sync_published")
    }
    fn meta(&self) -> Collection<Document> {
        self.db.collection("meta")
    }

    /// The condition "one of `ids`" on a string field, as
    /// `{ $gte: least, $lte: greatest, $in: ids }`: the same documents as
    /// `$in` alone. MongoDB turns both into the same index point lookups; a
    /// server that scans and tests operators in order (jongodb) rejects most
    /// documents on the bounds before the linear `$in` — measured on 100k
    /// templates, 1,000 ids took 4.2 s as a bare `$in` and 0.16 s behind
    /// the bounds (the 100k-template snapshot bench: 105.6 s before, 16.2 s
    /// after).
    pub(crate) fn one_of(ids: &[&str]) -> Document {
        match (ids.iter().min(), ids.iter().max()) {
            (Some(least), Some(greatest)) => doc! { "$gte": *least, "$lte": *greatest, "$in": ids },
            _ => doc! { "$in": ids },
        }
    }

    /// Up to `limit` documents of `collection` matching `filter` with `_id`
    /// after `after`, in `_id` order, as one reply: no `getMore`, which
    /// jongodb 0.1.6 refuses from the Rust driver on its replica-set profile
    /// (measured: a 100k-template index rebuild failed there with "supports
    /// readPreference mode 'primary' only"). Callers page on the last `_id`.
    pub(crate) async fn page_by_id<T>(
        collection: &Collection<T>,
        mut filter: Document,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<T>, StoreError>
    where
        T: serde::de::DeserializeOwned + Send + Sync,
    {
        if let Some(after) = after {
            filter.insert("_id", doc! { "$gt": after });
        }
        let limit = limit.clamp(1, 100_000);
        Ok(collection
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(limit as i64)
            .batch_size(limit as u32)
            .await?
            .try_collect()
            .await?)
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    /// Creates every index (idempotent: an existing index of the same spec is
    /// left alone) and records the schema version; refuses a database written
    /// by a newer schema.
    pub async fn init(&self) -> Result<(), StoreError> {
        if let Some(meta) = self.meta().find_one(doc! { "_id": "schema" }).await? {
            let found = meta.get_i64("version").or_else(|_| meta.get_i32("version").map(i64::from)).unwrap_or(0);
            if found > SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew { found });
            }
        }
        let index = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_string()).unique(unique.then_some(true)).build())
                .build()
        };
        self.identities().create_index(index(doc! { "groups": 1 }, "groups", false)).await?;
        self.identities().create_index(index(doc! { "name": 1 }, "name", false)).await?;
        self.templates().create_index(index(doc! { "model_id": 1, "identity": 1 }, "model_identity", false)).await?;
        self.templates().create_index(index(doc! { "identity": 1 }, "identity", false)).await?;
        self.photos().create_index(index(doc! { "identity": 1 }, "identity", false)).await?;
        self.devices().create_index(index(doc! { "groups": 1 }, "groups", false)).await?;
        self.devices().create_index(index(doc! { "token_hash": 1 }, "token_hash", false)).await?;
        self.devices().create_index(index(doc! { "assignment_pending": 1 }, "assignment_pending", false)).await?;
        self.deltas().create_index(index(doc! { "shard": 1, "seq": 1 }, "shard_seq", true)).await?;
        self.deltas().create_index(index(doc! { "identity": 1 }, "identity", false)).await?;
        self.deltas().create_index(index(doc! { "shard": 1, "at": 1 }, "shard_at", false)).await?;
        self.migrate_audit_keys().await?;
        self.audit().create_index(index(doc! { "device": 1, "epoch": 1, "seq": 1 }, "device_epoch_seq", true)).await?;
        self.audit().create_index(index(doc! { "at": -1 }, "at", false)).await?;
        self.audit().create_index(index(doc! { "device": 1, "at": -1 }, "device_at", false)).await?;
        self.audit().create_index(index(doc! { "identity": 1, "at": -1 }, "identity_at", false)).await?;
        self.audit().create_index(index(doc! { "decision": 1, "at": -1 }, "decision_at", false)).await?;
        self.admin_actions().create_index(index(doc! { "at": -1 }, "at", false)).await?;
        self.commands().create_index(index(doc! { "state": 1, "created_at": 1 }, "state_created", false)).await?;
        self.commands().create_index(index(doc! { "device": 1, "id": -1 }, "device_id", false)).await?;
        self.admin_actions().create_index(index(doc! { "actor": 1, "at": -1 }, "actor_at", false)).await?;
        self.admin_actions().create_index(index(doc! { "target": 1, "at": -1 }, "target_at", false)).await?;
        // Record the version without `$max` (not every MongoDB-protocol
        // server has it): insert it if absent, raise it if older.
        match self.meta().insert_one(doc! { "_id": "schema", "version": SCHEMA_VERSION }).await {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e.into()),
        }
        self.meta()
            .update_one(
                doc! { "_id": "schema", "version": { "$lt": SCHEMA_VERSION } },
                doc! { "$set": { "version": SCHEMA_VERSION } },
            )
            .await?;
        self.meta().update_one(doc! { "_id": "schema" }, doc! { "$set": { "checked_at": now_millis() } }).await?;
        Ok(())
    }

    /// The recorded schema version.
    pub async fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        let meta = self.meta().find_one(doc! { "_id": "schema" }).await?;
        Ok(meta.and_then(|m| m.get_i64("version").ok().or_else(|| m.get_i32("version").ok().map(i64::from))))
    }

    /// Takes the next number of counter `name` inside `session`'s transaction.
    pub async fn next_seq(&self, session: &mut ClientSession, name: &str, by: i64) -> Result<i64, StoreError> {
        let updated = self
            .counters()
            .find_one_and_update(doc! { "_id": name }, doc! { "$inc": { "seq": by } })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .session(session)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("counter {name} vanished")))?;
        counter_value(&updated, name)
    }

    /// Current value of counter `name` (0 when never used).
    pub async fn counter(&self, name: &str) -> Result<i64, StoreError> {
        match self.counters().find_one(doc! { "_id": name }).await? {
            Some(d) => counter_value(&d, name),
            None => Ok(0),
        }
    }

    /// Records an administrative action outside a transaction (reads, refusals).
    pub async fn record_action(&self, action: &AdminActionDoc) -> Result<(), StoreError> {
        self.admin_actions().insert_one(action).await?;
        Ok(())
    }

    /// Records an administrative action inside a transaction.
    pub async fn record_action_in(
        &self,
        session: &mut ClientSession,
        action: &AdminActionDoc,
    ) -> Result<(), StoreError> {
        self.admin_actions().insert_one(action).session(session).await?;
        Ok(())
    }

    /// Appends to the global change log (the master index follows it).
    pub async fn append_change(
        &self,
        session: &mut ClientSession,
        identity: &str,
        op: ChangeOp,
    ) -> Result<i64, StoreError> {
        let seq = self.next_seq(session, CHANGES_COUNTER, 1).await?;
        let change = ChangeDoc { seq, identity: identity.to_string(), op, at: now_millis() };
        match self.changes().insert_one(&change).session(session).await {
            Ok(_) => Ok(seq),
            Err(e) if is_duplicate_key(&e) => Err(StoreError::SequenceTaken { counter: CHANGES_COUNTER.into(), seq }),
            Err(e) => Err(e.into()),
        }
    }
}

fn counter_value(d: &Document, name: &str) -> Result<i64, StoreError> {
    d.get_i64("seq")
        .or_else(|_| d.get_i32("seq").map(i64::from))
        .map_err(|_| StoreError::Corrupt(format!("counter {name} has no integer seq")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_of_bounds_the_set_by_its_least_and_greatest_id() {
        assert_eq!(
            Store::one_of(&["p-2", "p-1", "p-3"]),
            doc! { "$gte": "p-1", "$lte": "p-3", "$in": ["p-2", "p-1", "p-3"] }
        );
        assert_eq!(Store::one_of(&[]), doc! { "$in": Vec::<&str>::new() });
    }
}
