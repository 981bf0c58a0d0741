//! Sync with the central server over MQTT (DESIGN.md §5): provisioning
//! ([`provision`]) and the shell around the protocol's device state machine
//! ([`shell`]), kept running by [`supervise`]. The kiosk works without it;
//! with it, signed deltas keep the gallery shard current and the audit
//! outbox drains to the server.

pub mod provision;
pub mod shell;
pub mod supervise;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use provision::{ProvisionError, Provisioned, provision};

/// The `[sync]` configuration section.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct SyncSection {
    /// The provisioning directory (`facegate-daemon provision --dir`); sync
    /// is off when absent.
    pub dir: Option<PathBuf>,
}

/// Why sync could not run.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("sync state is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("a storage task failed: {0}")]
    Task(String),
}
