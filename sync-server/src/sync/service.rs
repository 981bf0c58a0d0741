//! The sync service every server replica runs: the I/O shell around
//! [`ServerSync`].
//!
//! Three tasks share one MQTT 5 connection (TLS, this server's client
//! certificate, `clean_start = false` with a one-day session expiry):
//!
//! - the **connection** task polls the event loop, (re)subscribes on every
//!   connect to `$share/{group}/facegate/v1/device/+/up` and
//!   `facegate/v1/device/+/status`, reports the broker as a readiness
//!   dependency and hands incoming publications to
//! - the **handler** task: refuses messages from unknown or revoked devices,
//!   feeds the rest to [`ServerSync`] and carries out its actions in order
//!   (store the audit batch, then acknowledge; answer a resync from the delta
//!   log or with a snapshot; record applied seqs and statuses);
//! - the **publisher** task polls the delta log of every shard by sequence
//!   number (no change streams) and publishes each new entry as a signed
//!   [`facegate_protocol::DeltaBatch`] on the shard's topic. Only the replica
//!   holding the `delta-publisher` lease (a MongoDB document, renewed every
//!   poll) publishes; each shard's published position is kept in MongoDB.
//!   A replica that loses its lease mid-batch may publish a batch twice,
//!   which is harmless: a device ignores a batch whose `seq` it has.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use facegate_protocol::sync::server::{LogEntry, LogRead, ServerAction, ServerConfig, ServerInput, ServerSync};
use facegate_protocol::topics::{self, Topic};
use facegate_protocol::{AuditBatch, DeviceId, ShardId};
use mongodb::bson::{Document, doc};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};

use super::SyncConfig;
use super::pki::{Pki, PkiError};
use crate::readiness::Dependency;
use crate::store::{DeviceState, Store, StoreError, now_millis};

/// Log entries read per batch when publishing (halved while a batch does
/// not fit one message).
const PUBLISH_PAGE: usize = 256;
/// Log entries read per resync answer.
const RESYNC_PAGE: usize = 4096;
/// How long a device's state (active, revoked) is cached.
const DEVICE_CACHE: Duration = Duration::from_secs(5);
/// MQTT session expiry asked of the broker, in seconds.
const SESSION_EXPIRY_SECS: u32 = 24 * 3600;
const LEASE_ID: &str = "delta-publisher";

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

/// Counters of the sync service by event and reason (low cardinality).
#[derive(Debug)]
pub struct SyncStats {
    counts: Mutex<BTreeMap<String, u64>>,
}

/// Events the alert rules watch with `increase()`, exported from the start
/// at 0: Prometheus sees no increase in a series whose first sample is 1.
const ALERTED_EVENTS: [&str; 3] = ["publish_failed", "compaction_failed", "delta_published"];

impl Default for SyncStats {
    fn default() -> Self {
        Self { counts: Mutex::new(ALERTED_EVENTS.iter().map(|e| (e.to_string(), 0)).collect()) }
    }
}

impl SyncStats {
    pub fn count(&self, name: &str) {
        self.add(name, 1);
    }

    pub fn add(&self, name: &str, n: u64) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(name.to_string()).or_default() += n;
        }
    }

    pub fn get(&self, name: &str) -> u64 {
        self.counts.lock().map(|c| c.get(name).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Every counter, for tests and `/metrics`.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Prometheus text: `facegate_sync_events_total{event="…"} n`.
    pub fn render(&self) -> String {
        let name = crate::metrics::SYNC_EVENTS;
        let mut out = format!("# TYPE {name} counter\n");
        for (event, n) in self.snapshot() {
            out.push_str(&format!("{name}_total{{event=\"{event}\"}} {n}\n"));
        }
        out
    }
}

/// A rustls client configuration (ring) trusting `ca_pem_path` and
/// authenticating with the PEM certificate and key.
pub fn client_tls(
    ca_pem_path: &std::path::Path,
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<Arc<rustls::ClientConfig>, SyncError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |e: &dyn std::fmt::Display, p: &std::path::Path| SyncError::Tls(format!("{}: {e}", p.display()));
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(ca_pem_path).map_err(|e| tls(&e, ca_pem_path))? {
        roots.add(ca.map_err(|e| tls(&e, ca_pem_path))?).map_err(|e| tls(&e, ca_pem_path))?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| tls(&e, cert_path))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls(&e, cert_path))?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| tls(&e, key_path))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| SyncError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| SyncError::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// MQTT 5 options for a persistent-session TLS client.
pub fn mqtt_options(client_id: &str, host: &str, port: u16, tls: Arc<rustls::ClientConfig>) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)))
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_SECS))
        .set_max_packet_size(Some(super::broker::MAX_PACKET_BYTES as u32))
        .set_connection_timeout(10);
    options
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
    pub fn start(config: &SyncConfig, store: Store, pki: &Pki, broker: Dependency) -> Result<Self, SyncError> {
        let client_id = client_id(config)?;
        let (cert, key) = pki.client_paths();
        let tls = client_tls(&pki.ca_path(), &cert, &key)?;
        let options = mqtt_options(&client_id, &config.broker_host, config.broker_port, tls);
        let (client, eventloop) = AsyncClient::new(options, 256);
        let stats = Arc::new(SyncStats::default());
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
        log::info!(client_id = client_id.as_str(), host = config.broker_host.as_str(), port = config.broker_port,
            key_id:% = pki.signing_public_key().key_id(); "sync service starting");
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
                Handler {
                    machine,
                    store: store.clone(),
                    client: client.clone(),
                    stats: Arc::clone(&stats),
                    devices: HashMap::new(),
                }
                .run(incoming_rx, stopped.clone()),
            ),
            tokio::spawn(
                Publisher {
                    machine: publisher_machine,
                    store,
                    client,
                    stats: Arc::clone(&stats),
                    me: client_id,
                    lease: Duration::from_millis(config.publisher_lease_ms),
                    max_message_bytes: config.max_message_bytes,
                    holding: false,
                    published: HashMap::new(),
                    retention: Retention {
                        max_age: Duration::from_secs(config.log_max_age_secs),
                        interval: Duration::from_secs(config.compact_interval_secs),
                    },
                    compacted: HashMap::new(),
                    connected,
                }
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

async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

#[allow(clippy::too_many_arguments)]
async fn connection_task(
    mut eventloop: EventLoop,
    client: AsyncClient,
    group: String,
    incoming: mpsc::Sender<(String, Vec<u8>)>,
    broker: Dependency,
    connected: Arc<std::sync::atomic::AtomicBool>,
    stats: Arc<SyncStats>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            () = until_stopped(&mut stopped) => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                log::info!(session_present = ack.session_present; "connected to the MQTT broker");
                for topic in ServerSync::subscriptions(&group) {
                    if let Err(e) = client.subscribe(topic.clone(), QoS::AtLeastOnce).await {
                        log::warn!(error:% = e, topic = topic.as_str(); "subscribe failed");
                    }
                }
                connected.store(true, std::sync::atomic::Ordering::Release);
                broker.set(true);
                stats.count("connected");
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                if incoming.send((topic, publish.payload.to_vec())).await.is_err() {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                for code in &ack.return_codes {
                    if !matches!(code, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)) {
                        log::error!(code:? = code; "the broker refused a subscription of the sync service");
                        stats.count("subscribe_refused");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                log::warn!(reason:? = d.reason_code; "the broker disconnected the sync service");
            }
            Ok(_) => {}
            Err(e) => {
                connected.store(false, std::sync::atomic::Ordering::Release);
                broker.set(false);
                stats.count("connection_error");
                failures = failures.saturating_add(1);
                let delay = Duration::from_millis((100u64 << failures.min(6)).min(5_000));
                log::warn!(error:% = e, retry_ms = delay.as_millis() as u64; "MQTT connection failed");
                tokio::select! {
                    () = until_stopped(&mut stopped) => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    let _ = client.try_disconnect();
    broker.set(false);
}

/// Carries out the server machine's actions.
struct Handler {
    machine: ServerSync,
    store: Store,
    client: AsyncClient,
    stats: Arc<SyncStats>,
    /// Device id → (active, when checked).
    devices: HashMap<String, (bool, Instant)>,
}

impl Handler {
    async fn run(mut self, mut incoming: mpsc::Receiver<(String, Vec<u8>)>, mut stopped: watch::Receiver<bool>) {
        loop {
            let (topic, payload) = tokio::select! {
                () = until_stopped(&mut stopped) => return,
                message = incoming.recv() => match message {
                    Some(m) => m,
                    None => return,
                },
            };
            self.received(&topic, &payload).await;
        }
    }

    async fn received(&mut self, topic: &str, payload: &[u8]) {
        self.stats.count("received");
        let device = match topics::parse(topic) {
            Some(Topic::DeviceUp(d) | Topic::DeviceStatus(d)) => Some(d),
            _ => None,
        };
        if let Some(device) = &device
            && !self.device_active(device).await
        {
            log::warn!(device:% = device, topic; "message from an unknown or revoked device refused");
            self.stats.count("rejected_unknown_device");
            return;
        }
        let actions = self.machine.handle(now_millis(), ServerInput::Received { topic, payload });
        self.carry_out(actions).await;
    }

    /// Whether `device` exists and is active (cached briefly). A database
    /// error counts as "yes": the broker already checked its certificate.
    async fn device_active(&mut self, device: &DeviceId) -> bool {
        if let Some((active, at)) = self.devices.get(device.as_str())
            && at.elapsed() < DEVICE_CACHE
        {
            return *active;
        }
        let active = match self.store.device(device.as_str()).await {
            Ok(Some(d)) => d.state == DeviceState::Active,
            Ok(None) => false,
            Err(e) => {
                log::warn!(error:% = e; "cannot read a device's state");
                return true;
            }
        };
        if self.devices.len() > 100_000 {
            self.devices.clear();
        }
        self.devices.insert(device.as_str().to_string(), (active, Instant::now()));
        active
    }

    async fn carry_out(&mut self, actions: Vec<ServerAction>) {
        let mut queue: VecDeque<ServerAction> = actions.into();
        while let Some(action) = queue.pop_front() {
            let input = match action {
                ServerAction::Publish(p) => {
                    match self.client.publish(p.topic.clone(), QoS::AtLeastOnce, p.retain, p.payload).await {
                        Ok(()) => self.stats.count("published_down"),
                        Err(e) => {
                            self.stats.count("publish_failed");
                            log::warn!(error:% = e, topic = p.topic.as_str(); "publish failed");
                        }
                    }
                    None
                }
                ServerAction::ReadLog { device, shard, after_seq } => {
                    let read = self.read_log(&shard, after_seq).await;
                    self.stats.count("resync_answered");
                    Some((device, shard, after_seq, read))
                }
                ServerAction::ReadSnapshot { device, shard, after_seq } => {
                    let started = Instant::now();
                    let read = match self.store.shard_snapshot(&shard).await {
                        Ok((seq, entries)) => {
                            log::info!(device:% = device, shard:% = shard, seq, identities = entries.len(),
                                read_ms = started.elapsed().as_millis() as u64; "snapshot read; sending it");
                            LogRead::Snapshot { seq, entries }
                        }
                        Err(e) => {
                            log::warn!(error:% = e, shard:% = shard; "snapshot read failed");
                            LogRead::Failed
                        }
                    };
                    self.stats.count("snapshot_sent");
                    Some((device, shard, after_seq, read))
                }
                ServerAction::StoreAudit { device, events, up_to_seq } => {
                    let count = events.len() as u64;
                    let input = match self.store.store_audit_batch(&device, &AuditBatch { events }).await {
                        Ok(stored) => {
                            self.stats.add("audit_inserted", stored.inserted);
                            self.stats.add("audit_duplicates", stored.duplicates);
                            ServerInput::AuditStored { device, up_to_seq }
                        }
                        Err(e) => {
                            self.stats.count("audit_store_failed");
                            log::warn!(error:% = e, device:% = device, events = count; "audit batch not stored");
                            ServerInput::AuditStoreFailed { device, up_to_seq }
                        }
                    };
                    let follow = self.machine.handle(now_millis(), input);
                    for a in follow.into_iter().rev() {
                        queue.push_front(a);
                    }
                    None
                }
                ServerAction::RecordApplied { device, shard, seq } => {
                    if let Err(e) = self.store.record_device_applied(device.as_str(), shard.as_str(), seq).await {
                        log::warn!(error:% = e, device:% = device, shard:% = shard; "cannot record an applied seq");
                    }
                    None
                }
                ServerAction::RecordStatus(status) => {
                    let result = self
                        .store
                        .record_device_status(
                            status.device.as_str(),
                            status.online,
                            status.model_id.as_deref(),
                            Some(status.version.as_str()),
                        )
                        .await;
                    if let Err(e) = result {
                        log::warn!(error:% = e, device:% = status.device; "cannot record a device status");
                    }
                    if let Err(e) = self.store.device_reported(status.device.as_str(), status.last_command).await {
                        log::warn!(error:% = e, device:% = status.device; "cannot record the device's commands");
                    }
                    self.stats.count("status_recorded");
                    None
                }
                ServerAction::Rejected { topic, reason } => {
                    log::warn!(topic = topic.as_str(), reason:% = reason; "message refused");
                    self.stats.count(&format!("rejected_{}", reason.label()));
                    None
                }
                ServerAction::DeviceAhead { device, shard, device_seq, head } => {
                    log::error!(device:% = device, shard:% = shard, device_seq, head;
                        "a device claims a sequence number beyond the delta log (database restored from an older backup?)");
                    self.stats.count("device_ahead");
                    None
                }
            };
            if let Some((device, shard, after_seq, read)) = input {
                let follow = self.machine.handle(now_millis(), ServerInput::LogRead { device, shard, after_seq, read });
                for a in follow.into_iter().rev() {
                    queue.push_front(a);
                }
            }
        }
    }

    async fn read_log(&self, shard: &ShardId, after_seq: u64) -> LogRead {
        let read = async {
            let batch = self.store.read_deltas_after(shard, after_seq, RESYNC_PAGE).await?;
            let mut head = self.store.shard_head(shard).await?;
            if batch.is_none() && head > after_seq {
                // Nothing readable although the log goes on: compacted (the
                // device needs a snapshot), unless the next entry is there
                // and only held until its commit is visible — then the log
                // ends at the device's seq for now.
                let next = self.store.delta_entries_after(shard.as_str(), after_seq, 1).await?;
                if next.first().is_some_and(|e| e.seq == after_seq as i64 + 1) {
                    head = after_seq;
                }
            }
            Ok::<_, StoreError>((batch, head))
        };
        match read.await {
            Ok((batch, head)) => {
                let entries = batch.and_then(LogEntry::from_batch).unwrap_or_default();
                LogRead::Entries { head, entries }
            }
            Err(e) => {
                log::warn!(error:% = e, shard:% = shard; "delta log read failed");
                LogRead::Failed
            }
        }
    }
}

/// Publishes the delta log, while holding the lease.
struct Publisher {
    machine: ServerSync,
    store: Store,
    client: AsyncClient,
    stats: Arc<SyncStats>,
    me: String,
    lease: Duration,
    max_message_bytes: usize,
    holding: bool,
    /// Shard → last seq published (as stored in MongoDB), while holding.
    published: HashMap<ShardId, u64>,
    retention: Retention,
    /// Shard → when its log was last compacted by this replica.
    compacted: HashMap<ShardId, Instant>,
    connected: Arc<std::sync::atomic::AtomicBool>,
}

/// How long the delta log is kept (see [`Store::compact_delta_log`]).
#[derive(Debug, Clone, Copy)]
struct Retention {
    max_age: Duration,
    interval: Duration,
}

impl Publisher {
    fn leases(&self) -> mongodb::Collection<Document> {
        self.store.database().collection("sync_leases")
    }

    async fn run(mut self, interval: Duration, mut stopped: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = until_stopped(&mut stopped) => break,
                _ = ticker.tick() => {}
            }
            if !self.connected.load(std::sync::atomic::Ordering::Acquire) {
                continue;
            }
            if let Err(e) = self.tick().await {
                self.stats.count("publisher_error");
                log::warn!(error:% = e; "delta publication failed; retrying");
            }
        }
        if self.holding {
            let _ = self
                .leases()
                .update_one(doc! { "_id": LEASE_ID, "holder": &self.me }, doc! { "$set": { "expires_at": 0_i64 } })
                .await;
        }
    }

    /// Takes or renews the lease; whether this replica holds it.
    async fn renew_lease(&mut self) -> Result<bool, StoreError> {
        let now = now_millis();
        let initial = doc! { "_id": LEASE_ID, "holder": "", "expires_at": 0_i64 };
        if let Err(e) = self.leases().insert_one(initial).await {
            let e = StoreError::from(e);
            if !e.is_duplicate_key() {
                return Err(e);
            }
        }
        let expires = now + self.lease.as_millis() as i64;
        let taken = self
            .leases()
            .update_one(
                doc! { "_id": LEASE_ID, "$or": [ { "holder": &self.me }, { "expires_at": { "$lt": now } } ] },
                doc! { "$set": { "holder": &self.me, "expires_at": expires } },
            )
            .await
            .map_err(StoreError::from)?;
        let holding = taken.matched_count == 1;
        if holding != self.holding {
            if holding {
                log::info!(replica = self.me.as_str(); "this replica now publishes the delta log");
                self.published.clear();
            } else {
                log::info!(replica = self.me.as_str(); "another replica publishes the delta log");
            }
            self.holding = holding;
        }
        Ok(holding)
    }

    async fn tick(&mut self) -> Result<(), StoreError> {
        if !self.renew_lease().await? {
            return Ok(());
        }
        let started = Instant::now();
        let groups = self.store.list_groups().await?;
        for group in groups {
            let Ok(shard) = ShardId::new(group.id.clone()) else {
                continue;
            };
            self.publish_shard(&shard).await?;
            self.compact(&shard).await;
            // Never hold the lease past half its life without renewing.
            if started.elapsed() > self.lease / 2 {
                return Ok(());
            }
        }
        self.publish_commands().await
    }

    /// Sends the pending device commands (signed, on each device's `down`).
    async fn publish_commands(&mut self) -> Result<(), StoreError> {
        for command in self.store.pending_commands(100).await? {
            let (Ok(device), Ok(id)) = (DeviceId::new(command.device.clone()), u64::try_from(command.id)) else {
                continue;
            };
            let publish = match self.machine.command(now_millis(), &device, id, command.command.to_protocol()) {
                Ok(p) => p,
                Err(e) => {
                    log::error!(error:% = e, device:% = device, id; "a command cannot be encoded");
                    continue;
                }
            };
            if let Err(e) = self.client.publish(publish.topic, QoS::AtLeastOnce, false, publish.payload).await {
                log::warn!(error:% = e, device:% = device; "command publish failed");
                self.stats.count("publish_failed");
                return Ok(());
            }
            self.store.command_sent(&command.key).await?;
            self.stats.count("command_sent");
            log::info!(device:% = device, id, command = command.command.as_str(); "command sent");
        }
        Ok(())
    }

    async fn position(&mut self, shard: &ShardId) -> Result<u64, StoreError> {
        if let Some(seq) = self.published.get(shard) {
            return Ok(*seq);
        }
        let seq = self.store.published_seq(shard).await?;
        self.published.insert(shard.clone(), seq);
        Ok(seq)
    }

    async fn publish_shard(&mut self, shard: &ShardId) -> Result<(), StoreError> {
        let mut page = PUBLISH_PAGE;
        for _ in 0..64 {
            let from = self.position(shard).await?;
            let Some(batch) = self.store.read_deltas_after(shard, from, page).await? else {
                return Ok(());
            };
            let publish = match self.machine.publish_delta(&batch) {
                Ok(p) if p.payload.len() <= self.max_message_bytes => p,
                Ok(_) | Err(_) if batch.ops.len() > 1 => {
                    page = (batch.ops.len() / 2).max(1);
                    continue;
                }
                Ok(p) => p,
                Err(e) => {
                    log::error!(error:% = e, shard:% = shard, seq = batch.seq; "a delta cannot be encoded; skipped (devices resync)");
                    self.stats.count("delta_unencodable");
                    self.record(shard, batch.seq).await?;
                    continue;
                }
            };
            if let Err(e) = self.client.publish(publish.topic, QoS::AtLeastOnce, false, publish.payload).await {
                log::warn!(error:% = e, shard:% = shard; "delta publish failed");
                self.stats.count("publish_failed");
                return Ok(());
            }
            self.stats.count("delta_published");
            self.stats.add("delta_ops_published", batch.ops.len() as u64);
            log::debug!(shard:% = shard, base_seq = batch.base_seq, seq = batch.seq, ops = batch.ops.len(); "delta published");
            self.record(shard, batch.seq).await?;
        }
        Ok(())
    }

    async fn record(&mut self, shard: &ShardId, seq: u64) -> Result<(), StoreError> {
        self.store.record_published(shard, seq, &self.me).await?;
        self.published.insert(shard.clone(), seq);
        Ok(())
    }

    /// Compacts `shard`'s delta log when its turn has come (see
    /// [`Store::compact_delta_log`]). Housekeeping: a failure is logged and
    /// counted and the shard waits for its next turn, while publication
    /// (of this shard and the ones after it) goes on.
    async fn compact(&mut self, shard: &ShardId) {
        let now = Instant::now();
        if self.compacted.get(shard).is_some_and(|at| now.duration_since(*at) < self.retention.interval) {
            return;
        }
        self.compacted.insert(shard.clone(), now);
        let max_age = i64::try_from(self.retention.max_age.as_millis()).unwrap_or(i64::MAX);
        let done = match self.position(shard).await {
            Ok(published) => self.store.compact_delta_log(shard, published, max_age, now_millis()).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(done) if done.deleted > 0 => {
                self.stats.add("delta_entries_compacted", done.deleted);
                log::info!(shard:% = shard, up_to_seq = done.floor, entries = done.deleted;
                    "delta log compacted (devices behind it resync from a snapshot)");
            }
            Ok(_) => {}
            Err(e) => {
                self.stats.count("compaction_failed");
                log::warn!(error:% = e, shard:% = shard; "delta log compaction failed; retried at the shard's next turn");
            }
        }
    }
}
