//! The sync service every server replica runs: the I/O shell around
//! [`ServerSync`].
//!
//! Three tasks share one MQTT 5 connection (TLS, this server's client
//! certificate, `clean_start = false` with a one-day session expiry):
//!
//! - the **connection** task ([`super::connection`]) polls the event loop,
//!   (re)subscribes on every connect to `$share/{group}/facegate/v1/device/+/up`
//!   and `facegate/v1/device/+/status`, reports the broker as a readiness
//!   dependency and hands incoming publications to
//! - the **handler** task ([`super::handler`]): looks the device up by its
//!   topic (refusing unknown and revoked devices), hands [`ServerSync`] the
//!   device's public key so only what the device signed is believed, and
//!   carries out the machine's actions in order (store the audit batch, then
//!   acknowledge; answer a resync — for shards assigned to the device only —
//!   from the delta log or with a snapshot read off the handler loop; answer
//!   freshness requests; record applied seqs, capped at the log's head, and
//!   statuses; roll devices over to a new signing key);
//! - the **publisher** task ([`super::publisher`]) polls the delta log of
//!   every shard by sequence number (no change streams) and publishes each
//!   new entry as a signed [`facegate_protocol::DeltaBatch`] of the current
//!   log epoch on the shard's topic, then pushes changed assignments and
//!   pending commands. Only the replica holding the `delta-publisher` lease
//!   (a MongoDB document, renewed every poll) publishes; each shard's
//!   published position and each device's pushed assignment are kept in
//!   MongoDB. A replica that loses its lease mid-batch may publish a batch
//!   twice, which is harmless: a device ignores a batch whose `seq` it has,
//!   and an assignment whose version it has.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::time::Duration;

use facegate_protocol::sync::server::{ServerConfig, ServerSync};
use rumqttc::v5::{AsyncClient, MqttOptions};
use tokio::sync::{mpsc, watch};

use super::SyncConfig;
use super::connection::connection_task;
use super::handler::Handler;
use super::mosquitto::AclFollower;
use super::pki::{Pki, PkiError};
use super::publisher::{Publisher, Retention};
use crate::metrics::Labels;
use crate::readiness::Dependency;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("{path}: {source}")]
    ClientId {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The sync service's event counters: `facegate_sync_events_total{event}`,
/// a prometheus-client family registered with the server's metrics
/// ([`SyncStats::registered`]); unregistered in unit tests.
#[derive(Debug, Default)]
pub struct SyncStats {
    events: Family<Labels, Counter>,
    /// Every event counted or exported so far (for [`SyncStats::snapshot`]).
    names: Mutex<BTreeSet<String>>,
}

/// Events the alert rules watch with `increase()`, exported from the start
/// at 0: Prometheus sees no increase in a series whose first sample is 1.
const ALERTED_EVENTS: [&str; 8] = [
    "publish_failed",
    "compaction_failed",
    "delta_published",
    "audit_conflict",
    "rejected_bad_signature",
    "rejected_unsigned",
    "rejected_unassigned_shard",
    "rejected_unknown_device",
];

impl SyncStats {
    /// The counters, registered in `registry` with the alerted events at 0.
    pub fn registered(registry: &mut Registry) -> Self {
        let stats = Self::default();
        registry.register(
            crate::metrics::SYNC_EVENTS,
            "Sync service events by kind: messages published and refused, broker gate decisions, audit ingest",
            stats.events.clone(),
        );
        for event in ALERTED_EVENTS {
            stats.add(event, 0);
        }
        stats
    }

    pub fn count(&self, name: &str) {
        self.add(name, 1);
    }

    pub fn add(&self, name: &str, n: u64) {
        self.events.get_or_create(&Self::labels(name)).inc_by(n);
        if let Ok(mut names) = self.names.lock()
            && !names.contains(name)
        {
            names.insert(name.to_owned());
        }
    }

    pub fn get(&self, name: &str) -> u64 {
        self.events.get(&Self::labels(name)).map_or(0, |c| c.get())
    }

    /// Every counter, for tests and logs.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let names = self.names.lock().map(|n| n.clone()).unwrap_or_default();
        names.into_iter().map(|name| (name.clone(), self.get(&name))).collect()
    }

    fn labels(name: &str) -> Labels {
        vec![("event".to_owned(), name.to_owned())]
    }
}

/// A rustls client configuration (ring) trusting `ca_pem_path` and
/// authenticating with the PEM certificate and key ([`facegate_mqtt`]).
pub fn client_tls(
    ca_pem_path: &std::path::Path,
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<Arc<rustls::ClientConfig>, SyncError> {
    let read =
        |path: &std::path::Path| std::fs::read(path).map_err(|e| SyncError::Tls(format!("{}: {e}", path.display())));
    let names = [ca_pem_path, cert_path, key_path].map(|p| p.display().to_string());
    facegate_mqtt::client_tls(
        &read(ca_pem_path)?,
        &read(cert_path)?,
        &read(key_path)?,
        [names[0].as_str(), names[1].as_str(), names[2].as_str()],
    )
    .map_err(|e| SyncError::Tls(e.to_string()))
}

/// MQTT 5 options for this replica's persistent-session TLS client.
pub fn mqtt_options(client_id: &str, host: &str, port: u16, tls: Arc<rustls::ClientConfig>) -> MqttOptions {
    facegate_mqtt::session_options(client_id, host, port, Some(tls), super::broker::MAX_PACKET_BYTES as u32)
}

/// This replica's MQTT client id: configured, or a random one kept in the
/// state directory (stable across restarts, for the persistent session).
pub fn client_id(config: &SyncConfig) -> Result<String, SyncError> {
    if let Some(id) = &config.client_id {
        return Ok(id.clone());
    }
    let path = config.state_dir.join("client-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(SyncError::ClientId { path, source }),
    }
    let random = crate::crypto::random_bytes::<6>().map_err(|e| SyncError::Tls(e.to_string()))?;
    let id = format!("facegate-server-{}", super::hex(&random));
    std::fs::write(&path, &id).map_err(|source| SyncError::ClientId { path, source })?;
    Ok(id)
}

/// A running sync service.
#[derive(Debug)]
pub struct SyncService {
    pub stats: Arc<SyncStats>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SyncService {
    /// Connects (in the background: the broker may come later) and starts
    /// the three tasks. `broker` is the readiness dependency to report on.
    pub fn start(
        config: &SyncConfig,
        store: Store,
        pki: &Pki,
        broker: Dependency,
        stats: Arc<SyncStats>,
    ) -> Result<Self, SyncError> {
        let client_id = client_id(config)?;
        let (cert, key) = pki.client_paths();
        let tls = client_tls(&pki.ca_path(), &cert, &key)?;
        let options = mqtt_options(&client_id, &config.broker_host, config.broker_port, tls);
        let (client, eventloop) = AsyncClient::new(options, 256);
        let (stop, stopped) = watch::channel(false);
        let (incoming_tx, incoming_rx) = mpsc::channel(1024);
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let nonce = u64::from_le_bytes(crate::crypto::random_bytes::<8>().map_err(|e| SyncError::Tls(e.to_string()))?);
        let machine = ServerSync::new(
            pki.signing_key()?,
            ServerConfig { max_message_bytes: config.max_message_bytes, ..ServerConfig::default() },
            nonce,
        );
        let publisher_machine = ServerSync::new(pki.signing_key()?, ServerConfig::default(), nonce);
        let previous_key = pki.previous_signing_key()?;
        log::info!(client_id = client_id.as_str(), host = config.broker_host.as_str(), port = config.broker_port,
            key_id:% = pki.signing_public_key().key_id(),
            previous_key_id:? = previous_key.as_ref().map(|k| k.key_id().to_string()); "sync service starting");
        let tasks = vec![
            tokio::spawn(connection_task(
                eventloop,
                client.clone(),
                config.share_group.clone(),
                incoming_tx,
                broker,
                Arc::clone(&connected),
                Arc::clone(&stats),
                stopped.clone(),
            )),
            tokio::spawn(
                Handler::new(
                    machine,
                    store.clone(),
                    client.clone(),
                    Arc::clone(&stats),
                    pki.signing_public_key().key_id(),
                    previous_key,
                )
                .run(incoming_rx, stopped.clone()),
            ),
            tokio::spawn(
                Publisher::new(
                    publisher_machine,
                    store,
                    client,
                    Arc::clone(&stats),
                    client_id,
                    Duration::from_millis(config.publisher_lease_ms),
                    config.max_message_bytes,
                    Retention {
                        max_age: Duration::from_secs(config.log_max_age_secs),
                        interval: Duration::from_secs(config.compact_interval_secs),
                    },
                    connected,
                    config.mosquitto_acl.clone().map(|path| AclFollower::new(path, config.mosquitto_reload.clone())),
                )
                .run(Duration::from_millis(config.poll_interval_ms), stopped),
            ),
        ];
        Ok(Self { stats, stop, tasks })
    }

    /// Stops the tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub(super) async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}
