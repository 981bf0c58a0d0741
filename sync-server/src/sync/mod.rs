//! Sync over MQTT (DESIGN.md §5), the server's side.
//!
//! - [`pki`]: the device CA, the MQTT server certificate, the server's own
//!   MQTT client certificate and the Ed25519 delta-signing key, created on
//!   first start in [`SyncConfig::state_dir`].
//! - [`provision`]: `POST /v1/provision` — a one-time token and a CSR in,
//!   a device certificate, the broker address, the pinned signing key and
//!   the shard list out.
//! - [`broker`]: the embedded broker of a single box: `rumqttd` behind a
//!   gate that terminates TLS and enforces the per-device ACL.
//! - [`service`]: the MQTT client every replica runs: device uplinks through
//!   a shared subscription into [`facegate_protocol::sync::server::ServerSync`]
//!   (verified against each device's key), its actions carried out against
//!   MongoDB, and the delta log and changed assignments published as signed
//!   messages (one publisher at a time, by a lease in MongoDB).
//! - [`mosquitto`]: a mosquitto configuration and per-device ACL for sites.
//!
//! # The embedded broker and its ACL
//!
//! Every broker enforces the same per-device rules (DESIGN.md §7): a device
//! publishes only on its own `up`/`status` topics, reads only its own
//! `down` topic and its assigned shards' `delta` topics, cannot take over
//! another device's session (client id = certificate CN), and is refused
//! once revoked. mosquitto does it with the generated ACL, CRL and
//! `use_username_as_clientid` ([`mosquitto`]); the embedded broker with an
//! authorizing gate in front of `rumqttd` ([`broker`]), which also cuts a
//! revoked device's open connections and stops deliveries of a shard the
//! moment it is unassigned. The server still checks that an uplink names
//! the device of its topic, and every server → device message is signed.
//! The embedded broker keeps sessions in memory only; a site with many
//! doors uses mosquitto or an MQTT cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

pub mod broker;
mod connection;
mod handler;
pub mod mosquitto;
pub mod pki;
pub mod provision;
mod publisher;
pub mod service;

/// Which broker the sync service talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerKind {
    /// `rumqttd` inside this process behind the ACL gate (TLS with client
    /// certificates, per-device ACLs, in-memory sessions).
    Embedded,
    /// Any MQTT 5 broker at `broker-host:broker-port` (mosquitto, a cluster)
    /// whose TLS trusts the device CA of [`SyncConfig::state_dir`].
    External,
}

/// `[sync]`: MQTT sync, provisioning and the embedded broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Run the sync service and answer `POST /v1/provision`.
    pub enabled: bool,
    /// Device CA, MQTT certificates, signing key (created on first start;
    /// private keys mode 0400). Every replica needs the same files.
    pub state_dir: PathBuf,
    pub broker: BrokerKind,
    /// Host name of the broker, for this server and for devices (written
    /// into provisioning answers). A name, not an IP address: rustls clients
    /// send it as SNI and check it against the certificate.
    pub broker_host: String,
    pub broker_port: u16,
    /// Extra DNS names of the MQTT server certificate (`localhost` and
    /// `broker-host` are always in it).
    pub certificate_names: Vec<String>,
    /// TLS listener of the embedded broker (its gate: client certificates
    /// and per-device ACLs). Loopback by default: a site facing a network
    /// sets an address devices reach.
    pub embedded_listen: SocketAddr,
    /// A plain-TCP listener of the embedded broker, for demos only: the
    /// client id is taken as a device's id, unproven, and that device's ACL
    /// applies (never the server's rights).
    pub embedded_plain_listen: Option<SocketAddr>,
    /// MQTT client id of this replica (persistent session); a random id kept
    /// in `state-dir/client-id` when unset. Replicas need distinct ids.
    pub client_id: Option<String>,
    /// Shared-subscription group of the replicas (`$share/{group}/…`).
    pub share_group: String,
    /// Milliseconds between polls of the delta log.
    pub poll_interval_ms: u64,
    /// Milliseconds a replica holds the delta-publisher lease without renewing.
    pub publisher_lease_ms: u64,
    /// Largest message the server publishes, in bytes (at most the broker's limit).
    pub max_message_bytes: usize,
    /// Lifetime of a device certificate, in days.
    pub device_certificate_days: u32,
    /// Delta-log entries older than this are compacted even if a device has
    /// not applied them (it then resyncs from a snapshot); entries every
    /// active device has applied go sooner.
    pub log_max_age_secs: u64,
    /// Seconds between compactions of each shard's delta log.
    pub compact_interval_secs: u64,
    /// With `broker = "external"` (mosquitto): the ACL file this server
    /// keeps in step with the database — rewritten (atomically) by the
    /// replica holding the publisher lease when an assignment is pushed or
    /// a device is registered or revoked, then `mosquitto-reload` is run.
    /// Unset: regenerate it with `facegate-sync-server mosquitto`.
    pub mosquitto_acl: Option<PathBuf>,
    /// The command that makes mosquitto read its ACL again, e.g.
    /// `["systemctl", "reload", "mosquitto"]` (SIGHUP).
    pub mosquitto_reload: Vec<String>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            state_dir: PathBuf::from("/var/lib/facegate-sync-server/sync"),
            broker: BrokerKind::Embedded,
            broker_host: "localhost".into(),
            broker_port: 8883,
            certificate_names: Vec::new(),
            embedded_listen: SocketAddr::from(([127, 0, 0, 1], 8883)),
            embedded_plain_listen: None,
            client_id: None,
            share_group: "facegate".into(),
            poll_interval_ms: 200,
            publisher_lease_ms: 10_000,
            max_message_bytes: 256 * 1024,
            device_certificate_days: 825,
            log_max_age_secs: 7 * 24 * 3600,
            compact_interval_secs: 600,
            mosquitto_acl: None,
            mosquitto_reload: Vec::new(),
        }
    }
}

impl SyncConfig {
    /// Semantic checks (called by [`crate::config::Config::check`]).
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.into() });
        if self.broker_host.is_empty() || self.broker_host.parse::<std::net::IpAddr>().is_ok() {
            return invalid("sync.broker-host", "must be a DNS name such as localhost (rustls sends it as SNI)");
        }
        if self.broker_port == 0 {
            return invalid("sync.broker-port", "must be a port number");
        }
        if self.share_group.is_empty() || self.share_group.contains(['/', '+', '#']) {
            return invalid("sync.share-group", "must be a plain name");
        }
        if self.client_id.as_deref().is_some_and(|c| c.is_empty() || c.len() > 128) {
            return invalid("sync.client-id", "must be 1 to 128 characters");
        }
        if self.poll_interval_ms < 10 {
            return invalid("sync.poll-interval-ms", "must be at least 10");
        }
        if self.publisher_lease_ms < 10 * self.poll_interval_ms.max(100) {
            return invalid("sync.publisher-lease-ms", "must be at least 10 poll intervals (and 1000)");
        }
        if !(16 * 1024..=facegate_protocol::Kind::Down.max_bytes()).contains(&self.max_message_bytes) {
            return invalid("sync.max-message-bytes", "must be between 16 KiB and the protocol's down-message limit");
        }
        if self.compact_interval_secs == 0 {
            return invalid("sync.compact-interval-secs", "must be at least 1");
        }
        if !(1..=3650).contains(&self.device_certificate_days) {
            return invalid("sync.device-certificate-days", "must be between 1 and 3650");
        }
        if self.mosquitto_acl.is_some() && self.broker != BrokerKind::External {
            return invalid(
                "sync.mosquitto-acl",
                "is for broker = \"external\" (the embedded broker follows by itself)",
            );
        }
        if !self.mosquitto_reload.is_empty() && self.mosquitto_acl.is_none() {
            return invalid("sync.mosquitto-reload", "needs sync.mosquitto-acl");
        }
        if self.mosquitto_acl.is_some() && self.mosquitto_reload.first().is_none_or(String::is_empty) {
            return invalid("sync.mosquitto-reload", "must name the command that reloads mosquitto's ACL");
        }
        Ok(())
    }
}

/// Why the sync side could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyncStartError {
    #[error("sync PKI in {dir}: {source}")]
    Pki {
        dir: PathBuf,
        #[source]
        source: pki::PkiError,
    },
    #[error("embedded broker: {0}")]
    Broker(#[from] broker::BrokerError),
    #[error("sync service: {0}")]
    Service(#[from] service::SyncError),
    #[error("the sync start-up thread failed")]
    Join,
}

/// The running sync side of a server.
#[derive(Debug)]
pub struct SyncRuntime {
    pub pki: Arc<pki::Pki>,
    pub provisioner: Arc<provision::Provisioner>,
    pub broker: Option<broker::EmbeddedBroker>,
    pub service: service::SyncService,
}

impl SyncRuntime {
    /// Gives `router` what the sync side serves: `POST /v1/provision` (its
    /// counters are in the server's metrics registry already).
    pub fn serve(&self, router: axum::Router) -> axum::Router {
        router.layer(axum::Extension(Arc::clone(&self.provisioner)))
    }
}

/// Loads or creates the PKI, starts the embedded broker when configured,
/// and the sync service (its broker connection registered with `readiness`
/// as `mqtt-broker`). Give the router to [`SyncRuntime::serve`] to
/// answer `POST /v1/provision`.
pub async fn start(
    config: &SyncConfig,
    store: crate::store::Store,
    readiness: &crate::readiness::Readiness,
    stats: Arc<service::SyncStats>,
) -> Result<SyncRuntime, SyncStartError> {
    let config = config.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let mut names = vec![config.broker_host.clone()];
        names.extend(config.certificate_names.iter().cloned());
        let pki = pki::Pki::load_or_create(&config.state_dir, &names)
            .map_err(|source| SyncStartError::Pki { dir: config.state_dir.clone(), source })?;
        let broker = match config.broker {
            BrokerKind::Embedded => Some(broker::prepare(config.embedded_listen, config.embedded_plain_listen)?),
            BrokerKind::External => None,
        };
        Ok::<_, SyncStartError>((config, pki, broker))
    })
    .await
    .map_err(|_| SyncStartError::Join)??;
    let (config, pki, broker) = prepared;
    let pki = Arc::new(pki);
    // Registered once the broker is there: a failed start leaves readiness alone.
    let dependency = readiness.register("mqtt-broker");
    let service = service::SyncService::start(&config, store.clone(), &pki, dependency, stats)?;
    // The gate counts into the service's counters; its listeners are bound
    // already, so the service's first connection waits for it, not fails.
    let broker = match broker {
        Some(prepared) => match prepared.open(store.clone(), Arc::clone(&pki), Arc::clone(&service.stats)).await {
            Ok(broker) => Some(broker),
            Err(e) => {
                service.stop().await;
                return Err(e.into());
            }
        },
        None => None,
    };
    let provisioner = Arc::new(provision::Provisioner {
        store,
        pki: Arc::clone(&pki),
        mqtt: provision::MqttEndpoint { host: config.broker_host.clone(), port: config.broker_port, tls: true },
        certificate_days: config.device_certificate_days,
    });
    Ok(SyncRuntime { pki, provisioner, broker, service })
}

/// Hex of bytes (lower case).
pub(crate) fn hex(bytes: &[u8]) -> String {
    crate::crypto::hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_check_and_an_ip_broker_host_is_refused() {
        SyncConfig::default().check().unwrap();
        let c = SyncConfig { broker_host: "127.0.0.1".into(), ..SyncConfig::default() };
        assert!(c.check().unwrap_err().to_string().starts_with("sync.broker-host"));
    }

    #[test]
    fn a_followed_mosquitto_acl_needs_mosquitto_and_a_reload_command() {
        let acl = Some(PathBuf::from("/etc/mosquitto/facegate/acl"));
        let reload = vec!["systemctl".to_owned(), "reload".to_owned(), "mosquitto".to_owned()];
        let external = SyncConfig { broker: BrokerKind::External, ..SyncConfig::default() };
        let refused = |c: SyncConfig| c.check().unwrap_err().to_string();
        SyncConfig { mosquitto_acl: acl.clone(), mosquitto_reload: reload.clone(), ..external.clone() }
            .check()
            .unwrap();
        let embedded =
            SyncConfig { mosquitto_acl: acl.clone(), mosquitto_reload: reload.clone(), ..SyncConfig::default() };
        assert!(refused(embedded).starts_with("sync.mosquitto-acl"));
        assert!(refused(SyncConfig { mosquitto_acl: acl, ..external.clone() }).starts_with("sync.mosquitto-reload"));
        assert!(refused(SyncConfig { mosquitto_reload: reload, ..external }).starts_with("sync.mosquitto-reload"));
    }
}
