//! The store layer's error: one enum, variants named after causes.

use std::path::PathBuf;

use facegate_protocol::{IdentityId, ShardId};

/// Why a gallery or outbox operation failed. Nothing is half-applied: a
/// failed change leaves the database as it was before the call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key file {path} does not exist")]
    KeyMissing { path: PathBuf },
    #[error("cannot read key file {path}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key file {path} has mode {mode:04o}: group or others may read or write it; \
         restrict it with `chmod 0400 {path}`"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("key file {path} holds {len} bytes; a device key is exactly 32 bytes")]
    KeyLength { path: PathBuf, len: u64 },
    #[error("key file {path} already exists; it is not overwritten (the database it protects would become unreadable)")]
    KeyExists { path: PathBuf },
    #[error("cannot create key file {path}")]
    KeyCreate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the system random number generator failed")]
    Random,
    #[error("the key does not match this database ({dir})")]
    WrongKey { dir: PathBuf },
    #[error("no gallery database in {dir}")]
    Missing { dir: PathBuf },
    #[error("the gallery database in {dir} is in use by another process")]
    Locked { dir: PathBuf },
    #[error("cannot open the gallery database in {dir}: {source}")]
    Open {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("the gallery database is corrupt: {detail}")]
    Corrupt { detail: String },
    #[error("cannot write {path}")]
    Marker {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the gallery database has layout version {found}; this build reads version {supported}")]
    Schema { found: u32, supported: u32 },
    #[error(
        "the gallery holds templates of model {stored} but the device runs {configured}; \
         wipe the gallery and resync it for the new model"
    )]
    ModelMismatch { stored: String, configured: String },
    #[error("writing the gallery database failed (full disk or failing storage?): {source}")]
    Write {
        #[source]
        source: sled::Error,
    },
    #[error("reading the gallery database failed: {source}")]
    Read {
        #[source]
        source: sled::Error,
    },
    #[error("delta for shard {shard} goes from seq {base_seq} to {seq}: the new seq must be greater")]
    InvalidDelta { shard: ShardId, base_seq: u64, seq: u64 },
    #[error("shard {0} is reserved for standalone enrollments and cannot be changed by the server")]
    ReservedShard(ShardId),
    #[error("identity {identity}: {reason}")]
    InvalidIdentity { identity: IdentityId, reason: String },
    #[error("identity {identity}, template {index}: {reason}")]
    InvalidTemplate { identity: IdentityId, index: usize, reason: String },
}

impl StoreError {
    /// A sled error met while writing: corruption is reported as such,
    /// anything else (an I/O error: full disk) as a failed write.
    pub(crate) fn write(source: sled::Error) -> Self {
        match source {
            sled::Error::Corruption { .. } => Self::Corrupt { detail: source.to_string() },
            source => Self::Write { source },
        }
    }

    /// A sled error met while reading.
    pub(crate) fn read(source: sled::Error) -> Self {
        match source {
            sled::Error::Corruption { .. } => Self::Corrupt { detail: source.to_string() },
            source => Self::Read { source },
        }
    }

    pub(crate) fn corrupt(detail: impl Into<String>) -> Self {
        Self::Corrupt { detail: detail.into() }
    }

    /// The error of a failed sled transaction.
    pub(crate) fn transaction(error: sled::transaction::TransactionError<StoreError>) -> Self {
        match error {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => Self::write(e),
        }
    }
}
