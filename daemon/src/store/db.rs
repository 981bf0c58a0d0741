//! Opening the database (layout, key and model checks) and reading it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use facegate_protocol::{IdentityId, ShardId, ShardProgress};

use super::codec::{self, StoredIdentity};
use super::{DeviceKey, GalleryEntry, GalleryModel, SCHEMA_VERSION, StoreError};

/// sled's page cache for a kiosk: the gallery lives decrypted in the matcher's
/// matrix, so sled needs little cache of its own (its default is 1 GiB).
pub(crate) const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// A file beside sled's own, written once the database is initialised: sled
/// opens damaged files as an empty database, and this tells the two apart.
pub(crate) const INITIALISED_MARKER: &str = "facegate-initialised";

/// Where and how to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The sled database directory.
    pub dir: PathBuf,
    /// The device's embedder; a database made for another model is refused.
    pub model: GalleryModel,
    /// Create the database when `dir` holds none; otherwise that is
    /// [`StoreError::Missing`].
    pub create: bool,
    /// sled page cache in bytes.
    pub cache_bytes: u64,
}

impl StoreConfig {
    /// Creates the database when absent, with the default cache.
    pub fn new(dir: impl Into<PathBuf>, model: GalleryModel) -> Self {
        Self { dir: dir.into(), model, create: true, cache_bytes: DEFAULT_CACHE_BYTES }
    }
}

/// Sizes for `gallery stats` and the status message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoreStats {
    pub identities: usize,
    pub templates: usize,
    pub shards: Vec<ShardProgress>,
    pub outbox_depth: u64,
    /// Bytes sled uses on disk.
    pub db_bytes: u64,
}

/// The gallery shard and outbox in sled. Gallery changes are serialised by an
/// internal lock; reads and audit appends run concurrently with them.
#[derive(Debug)]
pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) model: GalleryModel,
    pub(crate) key: RwLock<Arc<DeviceKey>>,
    pub(crate) db: sled::Db,
    pub(crate) identities: sled::Tree,
    pub(crate) templates: sled::Tree,
    pub(crate) meta: sled::Tree,
    pub(crate) outbox: sled::Tree,
    /// Serialises gallery changes (so a snapshot's membership scan and its
    /// transaction see the same state).
    pub(crate) writer: Mutex<()>,
    /// The last audit seq handed out.
    pub(crate) audit_seq: Mutex<u64>,
    /// The outbox's epoch (`meta` `outbox-epoch`), stamped on every event.
    pub(crate) outbox_epoch: u64,
    /// Test seam: flushes still to fail (see [`Store::fail_next_flushes`]).
    pub(crate) failing_flushes: AtomicU32,
}

impl Store {
    /// Opens (or creates) the database in `config.dir` under `key`. Checks,
    /// in order: the layout version, that `key` is the one the database was
    /// made with ([`StoreError::WrongKey`] otherwise, before any template is
    /// read), and the model. A database sled cannot read, or one missing its
    /// metadata, is [`StoreError::Corrupt`].
    pub fn open(config: &StoreConfig, key: DeviceKey) -> Result<Self, StoreError> {
        let dir = config.dir.clone();
        if !config.create && !dir.join("db").is_file() {
            return Err(StoreError::Missing { dir });
        }
        let db = open_sled(&dir, config.cache_bytes)?;
        let tree = |name: &str| db.open_tree(name).map_err(|source| open_error(&dir, source));
        let mut store = Self {
            identities: tree(codec::IDENTITIES)?,
            templates: tree(codec::TEMPLATES)?,
            meta: tree(codec::META)?,
            outbox: tree(codec::OUTBOX)?,
            db,
            dir,
            model: config.model.clone(),
            key: RwLock::new(Arc::new(key)),
            writer: Mutex::new(()),
            audit_seq: Mutex::new(0),
            outbox_epoch: 0,
            failing_flushes: AtomicU32::new(0),
        };
        store.check_or_initialise()?;
        store.outbox_epoch = store.read_or_create_outbox_epoch()?;
        let last_audit = store.read_last_audit_seq()?;
        *store.audit_lock() = last_audit;
        Ok(store)
    }

    fn check_or_initialise(&self) -> Result<(), StoreError> {
        let key = self.key();
        let Some(schema) = self.meta.get(codec::META_SCHEMA).map_err(StoreError::read)? else {
            let empty = self.meta.is_empty()
                && self.identities.is_empty()
                && self.templates.is_empty()
                && self.outbox.is_empty();
            if !empty {
                return Err(StoreError::corrupt("the layout version is missing from a non-empty database"));
            }
            if self.dir.join(INITIALISED_MARKER).exists() {
                // sled treats a damaged log as its end: garbage in its files
                // opens as an empty database. The marker says there was one.
                return Err(StoreError::corrupt(format!(
                    "sled opened an empty database in {} although one was initialised here ({INITIALISED_MARKER} exists): its files are damaged; restore them or delete the directory to resync from the server",
                    self.dir.display()
                )));
            }
            let mut batch = sled::Batch::default();
            batch.insert(codec::META_SCHEMA, SCHEMA_VERSION.to_be_bytes().to_vec());
            batch.insert(codec::META_MODEL, self.model.id.as_bytes());
            batch.insert(codec::META_KEY_CHECK, codec::key_check_value(&key)?);
            self.meta.apply_batch(batch).map_err(StoreError::write)?;
            self.flush()?;
            return self.write_marker();
        };
        let found = <[u8; 4]>::try_from(schema.as_ref())
            .map(u32::from_be_bytes)
            .map_err(|_| StoreError::corrupt("the layout version is not 4 bytes"))?;
        if found != SCHEMA_VERSION {
            return Err(StoreError::Schema { found, supported: SCHEMA_VERSION });
        }
        let check = self
            .meta
            .get(codec::META_KEY_CHECK)
            .map_err(StoreError::read)?
            .ok_or_else(|| StoreError::corrupt("the key check value is missing"))?;
        if !codec::key_matches(&key, &check) {
            return Err(StoreError::WrongKey { dir: self.dir.clone() });
        }
        let stored = self
            .meta
            .get(codec::META_MODEL)
            .map_err(StoreError::read)?
            .ok_or_else(|| StoreError::corrupt("the model id is missing"))?;
        let stored = String::from_utf8_lossy(&stored);
        if stored != self.model.id {
            return Err(StoreError::ModelMismatch { stored: stored.into_owned(), configured: self.model.id.clone() });
        }
        if !self.dir.join(INITIALISED_MARKER).exists() {
            // A crash between initialising sled and writing the marker.
            self.write_marker()?;
        }
        Ok(())
    }

    /// Records, outside sled, that this directory holds an initialised
    /// database (written durably: temporary file, fsync, rename).
    fn write_marker(&self) -> Result<(), StoreError> {
        use std::io::Write;
        let marker = self.dir.join(INITIALISED_MARKER);
        let temporary = self.dir.join(format!("{INITIALISED_MARKER}.tmp"));
        let io = |source: std::io::Error| StoreError::Marker { path: marker.clone(), source };
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        writeln!(file, "facegate gallery database, layout {SCHEMA_VERSION}, model {}", self.model.id).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temporary, &marker).map_err(io)?;
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)
    }

    /// The directory of the database.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The device's model.
    pub fn model(&self) -> &GalleryModel {
        &self.model
    }

    pub(crate) fn key(&self) -> Arc<DeviceKey> {
        Arc::clone(&self.key.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn writer_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn audit_lock(&self) -> MutexGuard<'_, u64> {
        self.audit_seq.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes every completed write durable (fsync).
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        let injected = self.failing_flushes.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if injected.is_ok() {
            let full = std::io::Error::from_raw_os_error(28); // ENOSPC
            return Err(StoreError::write(sled::Error::Io(full)));
        }
        self.db.flush().map(drop).map_err(StoreError::write)
    }

    /// Fault injection for tests: the next `count` flushes fail as if the
    /// disk were full (ENOSPC), after sled applied the change in memory —
    /// what a full or read-only disk does to a sled write. Production code
    /// never calls this.
    #[doc(hidden)]
    pub fn fail_next_flushes(&self, count: u32) {
        self.failing_flushes.store(count, Ordering::SeqCst);
    }

    /// Whether `key` is the key the database is encrypted under now (as
    /// sled holds it, which a failed flush may not have made durable yet).
    pub fn is_current_key(&self, key: &DeviceKey) -> Result<bool, StoreError> {
        let check = self
            .meta
            .get(codec::META_KEY_CHECK)
            .map_err(StoreError::read)?
            .ok_or_else(|| StoreError::corrupt("the key check value is missing"))?;
        Ok(codec::key_matches(key, &check))
    }

    /// Applied sequence number of `shard`; 0 for a shard never seen.
    pub fn shard_seq(&self, shard: &ShardId) -> Result<u64, StoreError> {
        match self.meta.get(codec::seq_key(shard)).map_err(StoreError::read)? {
            Some(bytes) => codec::read_u64(&bytes, "a shard sequence number"),
            None => Ok(0),
        }
    }

    /// Every shard with an applied seq, by shard id.
    pub fn shards(&self) -> Result<Vec<ShardProgress>, StoreError> {
        let mut shards = Vec::new();
        for item in self.meta.scan_prefix(codec::META_SEQ_PREFIX) {
            let (key, value) = item.map_err(StoreError::read)?;
            if let Some(shard) = codec::shard_of_seq_key(&key) {
                shards.push(ShardProgress { shard: shard?, seq: codec::read_u64(&value, "a shard sequence number")? });
            }
        }
        Ok(shards)
    }

    /// The identity as stored, templates decrypted.
    pub fn entry(&self, identity: &IdentityId) -> Result<Option<GalleryEntry>, StoreError> {
        let Some(bytes) = self.identities.get(identity.as_str()).map_err(StoreError::read)? else {
            return Ok(None);
        };
        let stored: StoredIdentity = codec::from_cbor(&bytes, "an identity record")?;
        self.with_templates(identity, stored).map(Some)
    }

    fn with_templates(&self, identity: &IdentityId, stored: StoredIdentity) -> Result<GalleryEntry, StoreError> {
        let sealed = self
            .templates
            .get(identity.as_str())
            .map_err(StoreError::read)?
            .ok_or_else(|| StoreError::corrupt(format!("identity {identity} has no template entry")))?;
        let templates = codec::open_templates(&self.key(), identity, &sealed)?;
        Ok(GalleryEntry { record: stored.record, shards: stored.shards, templates })
    }

    /// Calls `visit` with every identity, by id, templates decrypted; stops
    /// at the first error.
    pub fn visit_entries(
        &self,
        mut visit: impl FnMut(GalleryEntry) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for item in self.identities.iter() {
            let (key, bytes) = item.map_err(StoreError::read)?;
            let identity = codec::identity_of_key(&key)?;
            let stored: StoredIdentity = codec::from_cbor(&bytes, "an identity record")?;
            if stored.record.id != identity {
                return Err(StoreError::corrupt(format!("the record stored under {identity} names another id")));
            }
            visit(self.with_templates(&identity, stored)?)?;
        }
        Ok(())
    }

    /// Every identity, by id.
    pub fn entries(&self) -> Result<Vec<GalleryEntry>, StoreError> {
        let mut entries = Vec::new();
        self.visit_entries(|entry| {
            entries.push(entry);
            Ok(())
        })?;
        Ok(entries)
    }

    /// Number of identities (without decrypting anything).
    pub fn identity_count(&self) -> usize {
        self.identities.len()
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(StoreError::read)
    }
}

fn open_error(dir: &Path, source: sled::Error) -> StoreError {
    match source {
        sled::Error::Io(ref e) if e.to_string().contains("could not acquire lock") => {
            StoreError::Locked { dir: dir.to_path_buf() }
        }
        sled::Error::Corruption { .. } => StoreError::corrupt(format!("sled reports corruption in {}", dir.display())),
        source => StoreError::Open { dir: dir.to_path_buf(), source },
    }
}

/// sled panics on some malformed files instead of returning an error; such a
/// panic at open is reported as corruption.
fn open_sled(dir: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new().path(dir).cache_capacity(cache_bytes);
    match catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(result) => result.map_err(|source| open_error(dir, source)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("sled panicked");
            Err(StoreError::corrupt(format!("sled cannot read {}: {message}", dir.display())))
        }
    }
}
