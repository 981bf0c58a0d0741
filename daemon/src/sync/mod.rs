//! Sync with the central server over MQTT (DESIGN.md §5): provisioning
//! ([`provision`]), the shell around the protocol's device state machine
//! ([`shell`]), kept running by [`supervise`], and what it keeps durably in
//! the sync directory ([`state`]). The kiosk works without it; with it,
//! signed deltas keep the gallery shard current, the audit outbox drains to
//! the server, and signed freshness proofs keep the door fresh: a door
//! without one for `max-staleness-secs` is stale and grants only
//! `offline_access` identities ([`crate::freshness`]).

pub mod provision;
pub mod shell;
pub mod state;
pub mod supervise;

use std::path::PathBuf;

use facegate_protocol::sync::device::{DEFAULT_MAX_STALENESS_MS, DeviceConfig};
use serde::{Deserialize, Serialize};

pub use provision::{ProvisionError, Provisioned, provision};

/// The smallest non-zero `max-staleness-secs`: below it the freshness proofs
/// (asked for every quarter of the bound, at least every second) leave no
/// room for a round trip and a retry, and a connected door would flap.
pub const MIN_MAX_STALENESS_SECS: u64 = 10;

/// The `[sync]` configuration section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct SyncSection {
    /// The provisioning directory (`facegate-daemon provision --dir`); sync
    /// is off when absent.
    pub dir: Option<PathBuf>,
    /// With sync on, the door denies everyone but `offline_access`
    /// identities once it has had no valid freshness proof from the centre
    /// for this long (fail secure: a removal that cannot reach a cut-off
    /// door cannot be outrun for longer than this). 0 turns staleness off;
    /// 1 to 9 are refused as too tight.
    pub max_staleness_secs: u64,
}

impl Default for SyncSection {
    fn default() -> Self {
        Self { dir: None, max_staleness_secs: DEFAULT_MAX_STALENESS_MS / 1000 }
    }
}

impl SyncSection {
    /// The staleness bound in milliseconds (0: off).
    pub fn max_staleness_ms(&self) -> u64 {
        self.max_staleness_secs.saturating_mul(1000)
    }

    /// The device machine's settings for this section.
    pub fn device_config(&self) -> DeviceConfig {
        let max_staleness_ms = self.max_staleness_ms();
        DeviceConfig {
            max_staleness_ms,
            freshness_interval_ms: DeviceConfig::freshness_interval_for(max_staleness_ms),
            ..DeviceConfig::default()
        }
    }

    /// Checks that serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        if (1..MIN_MAX_STALENESS_SECS).contains(&self.max_staleness_secs) {
            return Err(format!(
                "sync.max-staleness-secs of {} is too tight for the freshness proof interval: use at least {MIN_MAX_STALENESS_SECS} (or 0 to turn staleness off)",
                self.max_staleness_secs
            ));
        }
        Ok(())
    }
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
    #[error("{path}: {message}")]
    SigningKey { path: PathBuf, message: String },
    #[error("the system random number generator failed")]
    Random,
    #[error("sync state is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("a storage task failed: {0}")]
    Task(String),
}
