//! The MQTT shell around the protocol's [`DeviceSync`] machine: one tokio
//! task drives the machine, carries out its actions against the sled store
//! (on blocking threads), the sync directory ([`super::state`]) and rumqttc;
//! a second task polls rumqttc's event loop (which reconnects by itself) and
//! forwards what arrives. The machine decides; this file only does I/O.
//!
//! At start the shell hands the machine what is durable: the epoch and
//! assignment of `sync-state` (else the shards of `provisioned.json`), the
//! store's seqs and outbox epoch, the trusted central keys, and the device
//! key that signs every uplink (the last will included). Store shards
//! outside the assignment are purged first (never the local shard). After
//! every input it publishes the machine's `fresh_until` to the
//! [`FreshnessGate`] the kiosk decides with, and reports the health word
//! `stale` while the door is stale.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use facegate_protocol::sync::Publish;
use facegate_protocol::sync::device::{DeviceAction, DeviceConfig, DeviceInput, DeviceState, DeviceSync, StatusInfo};
use facegate_protocol::{Command, DeltaBatch, ShardId, ShardProgress, SnapshotEntry, topics};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::{Notify, mpsc};

use super::SyncError;
use super::provision::{CA, DEVICE_CERT, DEVICE_KEY, Provisioned};
use super::state::{self, WIPED};
use crate::freshness::FreshnessGate;
use crate::kiosk::unix_millis;
use crate::metrics::Metrics;
use crate::store::{DeltaOutcome, GalleryStore, LOCAL_SHARD, LiveShard, SnapshotOutcome, StoreError};

/// Everything the shell needs.
#[derive(Clone)]
pub struct SyncContext {
    pub dir: PathBuf,
    pub shard: Arc<LiveShard>,
    /// The device key file (rotated by the `rotate_key` command).
    pub key_path: PathBuf,
    pub model_id: String,
    /// Notified after every audit append.
    pub outbox: Arc<Notify>,
    pub metrics: Option<Metrics>,
    pub shutdown: Arc<AtomicBool>,
    /// Set while the MQTT session is up (readiness reports it).
    pub connected: Arc<AtomicBool>,
    pub config: DeviceConfig,
    /// Where the machine's `fresh_until` goes after every input.
    pub freshness: FreshnessGate,
}

impl std::fmt::Debug for SyncContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncContext").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, SyncError> {
    std::fs::read(path).map_err(|source| SyncError::Io { path: path.to_path_buf(), source })
}

/// The largest MQTT packet the kiosk accepts (a snapshot chunk fits).
const MAX_PACKET_BYTES: u32 = 4 * 1024 * 1024;

/// The rustls client configuration: trust only the provisioned CA, present
/// the device certificate ([`facegate_mqtt::client_tls`]).
fn tls_config(dir: &Path) -> Result<Arc<rustls::ClientConfig>, SyncError> {
    let (ca, cert, key) =
        (read_file(&dir.join(CA))?, read_file(&dir.join(DEVICE_CERT))?, read_file(&dir.join(DEVICE_KEY))?);
    facegate_mqtt::client_tls(&ca, &cert, &key, [CA, DEVICE_CERT, DEVICE_KEY])
        .map_err(|e| SyncError::Tls(e.to_string()))
}

/// Whether the server wiped this device (sync then stays off).
pub fn is_wiped(dir: &Path) -> bool {
    dir.join(WIPED).exists()
}

/// Aborts the event-loop task when `run` returns, by any path.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn qos1() -> QoS {
    QoS::AtLeastOnce
}

/// What the event-loop task forwards.
enum Incoming {
    Connected,
    Disconnected(String),
    Message {
        topic: String,
        payload: Vec<u8>,
    },
    /// Everything queued before our `disconnect` has been written out.
    Flushed,
}

/// Polls rumqttc until our own `disconnect` goes out (requests are written
/// in order, so everything published before it went out first) or the
/// receiver is gone; rumqttc reconnects on the next poll after an error,
/// with our backoff in between.
async fn pump(mut events: EventLoop, forward: mpsc::Sender<Incoming>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let incoming = match events.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                let _ = forward.send(Incoming::Flushed).await;
                return;
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(500);
                Incoming::Connected
            }
            Ok(Event::Incoming(Packet::Publish(p))) => match String::from_utf8(p.topic.to_vec()) {
                Ok(topic) => Incoming::Message { topic, payload: p.payload.to_vec() },
                Err(_) => {
                    log::warn!("a publication with a topic that is not UTF-8 was ignored");
                    continue;
                }
            },
            Ok(_) => continue,
            Err(error) => {
                let message = error.to_string();
                if forward.send(Incoming::Disconnected(message)).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if forward.send(incoming).await.is_err() {
            return;
        }
    }
}

/// Runs sync until `shutdown` (or a wipe). Errors on setup (unprovisioned,
/// unreadable certificates) and on any store or file error while carrying
/// out an action; [`super::supervise`] restarts it. A lost broker is
/// retried forever.
pub async fn run(ctx: SyncContext) -> Result<(), SyncError> {
    if is_wiped(&ctx.dir) {
        log::warn!(dir:% = ctx.dir.display(); "this device was wiped by the server: sync stays off until it is provisioned again");
        // The marker is written after the shards are emptied; emptying again
        // is idempotent and covers a marker written by an older build first.
        empty_synced_shards(&ctx).await?;
        return Ok(());
    }
    let provisioned = Provisioned::load(&ctx.dir)?;
    let (device, provisioned_shards, provisioned_keys) = provisioned.check()?;
    let signer = state::load_signing_key(&ctx.dir)?;
    let keys = state::read_trusted_keys(&ctx.dir)?.unwrap_or(provisioned_keys);
    let (epoch, assignment_version, shards) = match state::read_sync_state(&ctx.dir)? {
        Some(saved) => (saved.epoch, saved.assignment.version, saved.assignment.shards),
        None => (0, provisioned.assignment_version, provisioned_shards),
    };
    let (progress, unassigned) = reconcile(&ctx, &shards).await?;
    let state = DeviceState {
        shards: shards
            .iter()
            .map(|shard| ShardProgress {
                shard: shard.clone(),
                seq: progress.iter().find(|p| &p.shard == shard).map_or(0, |p| p.seq),
            })
            .collect(),
        assignment_version,
        epoch,
        last_command_id: state::read_last_command(&ctx.dir)?,
        outbox_depth: {
            let store = Arc::clone(&ctx.shard);
            blocking(move || store.outbox_depth()).await?
        },
        outbox_epoch: ctx.shard.outbox_epoch(),
        nonce_seed: state::nonce_seed()?,
    };
    // Stale from the start until the first valid proof (unless staleness is off).
    let status = status_info(&ctx, ctx.config.max_staleness_ms > 0);
    let mut machine = DeviceSync::new(device.clone(), keys, signer, ctx.config.clone(), state, status, unix_millis());
    ctx.freshness.set(machine.fresh_until());
    let mut reported_stale = ctx.config.max_staleness_ms > 0;
    log::info!(
        epoch = epoch, assignment = assignment_version, shards:? = machine.shards(), max_staleness_ms = ctx.config.max_staleness_ms;
        "sync state loaded"
    );

    // A persistent session (MQTT 5: clean start off, a day of expiry); the
    // durable outbox, not the broker, is what guarantees delivery.
    let tls = if provisioned.mqtt.tls {
        Some(tls_config(&ctx.dir)?)
    } else {
        log::warn!("sync without TLS: only for a demo on loopback");
        None
    };
    let mut options = facegate_mqtt::session_options(
        device.as_str(),
        &provisioned.mqtt.host,
        provisioned.mqtt.port,
        tls,
        MAX_PACKET_BYTES,
    );
    if let Some(will) = machine.last_will(unix_millis()) {
        options.set_last_will(LastWill::new(will.topic, will.payload, qos1(), will.retain, None));
    }
    let (client, events) = AsyncClient::new(options, 256);
    let (forward, mut incoming) = mpsc::channel(256);
    let _pump = AbortOnDrop(tokio::spawn(pump(events, forward)));
    log::info!(device = device.as_str(), broker = format!("{}:{}", provisioned.mqtt.host, provisioned.mqtt.port).as_str(); "sync starting");

    // Topics of shards purged at start: a persistent session may still hold them.
    let mut leftover_topics: Vec<String> = unassigned.iter().map(topics::shard_delta).collect();
    let mut pending: VecDeque<DeviceAction> = VecDeque::new();
    let mut last_depth = u64::MAX;
    let mut poll_shutdown = tokio::time::interval(Duration::from_millis(250));
    while !ctx.shutdown.load(Ordering::Relaxed) {
        let deadline = machine.next_deadline().map(|at| {
            let wait = u64::try_from(at.saturating_sub(unix_millis())).unwrap_or(0);
            tokio::time::Instant::now() + Duration::from_millis(wait)
        });
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let now = unix_millis();
        let actions = tokio::select! {
            message = incoming.recv() => match message {
                None => break,
                Some(Incoming::Connected) => {
                    ctx.connected.store(true, Ordering::Relaxed);
                    if let Some(m) = &ctx.metrics {
                        m.sync_connected.set(1);
                    }
                    subscribe(&client, machine.subscriptions()).await;
                    unsubscribe(&client, std::mem::take(&mut leftover_topics)).await;
                    log::info!("sync connected");
                    machine.handle(now, DeviceInput::Connected)
                }
                Some(Incoming::Disconnected(reason)) => {
                    if let Some(m) = &ctx.metrics {
                        m.sync_connected.set(0);
                    }
                    if ctx.connected.swap(false, Ordering::Relaxed) {
                        log::warn!(reason = reason.as_str(); "sync disconnected; retrying");
                    } else {
                        log::debug!(reason = reason.as_str(); "broker still unreachable");
                    }
                    machine.handle(now, DeviceInput::Disconnected)
                }
                Some(Incoming::Message { topic, payload }) => {
                    machine.handle(now, DeviceInput::Received { topic: &topic, payload: &payload })
                }
                Some(Incoming::Flushed) => break,
            },
            () = ctx.outbox.notified() => {
                let store = Arc::clone(&ctx.shard);
                let depth = blocking(move || store.outbox_depth()).await?;
                if depth == last_depth { Vec::new() } else {
                    last_depth = depth;
                    machine.handle(now, DeviceInput::OutboxChanged { depth })
                }
            }
            () = sleep => machine.handle(now, DeviceInput::Tick),
            _ = poll_shutdown.tick() => Vec::new(),
        };
        pending.extend(actions);
        loop {
            while let Some(action) = pending.pop_front() {
                if let Some(input) = execute(&ctx, &client, action).await? {
                    pending.extend(machine.handle(unix_millis(), input.as_input()));
                }
            }
            ctx.freshness.set(machine.fresh_until());
            let stale = machine.is_stale(unix_millis());
            if stale == reported_stale {
                break;
            }
            reported_stale = stale;
            pending.extend(machine.handle(unix_millis(), DeviceInput::StatusChanged(status_info(&ctx, stale))));
        }
        if machine.is_wiped() {
            log::warn!("wiped by command: sync stops; decommission this device");
            break;
        }
    }
    ctx.connected.store(false, Ordering::Relaxed);
    // Let the last words out (a wiped device's final status with the wipe
    // taken; queued acks and audit) before the pump is dropped, but never
    // hold shutdown for an unreachable broker, nor for a request queue that
    // filled while it was away (try_disconnect does not wait).
    if client.try_disconnect().is_ok() {
        let flushed = async {
            while let Some(event) = incoming.recv().await {
                if matches!(event, Incoming::Flushed) {
                    return;
                }
            }
        };
        if tokio::time::timeout(FLUSH_ON_EXIT, flushed).await.is_err() {
            log::warn!(timeout_ms = FLUSH_ON_EXIT.as_millis(); "sync stopped before the broker took its last messages");
        }
    }
    Ok(())
}

/// How long sync waits, when it stops, for its queued messages to go out.
const FLUSH_ON_EXIT: Duration = Duration::from_secs(3);

/// What the machine says about the device in its status.
fn status_info(ctx: &SyncContext, stale: bool) -> StatusInfo {
    StatusInfo {
        model_id: Some(ctx.model_id.clone()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        health: if stale { "stale" } else { "ok" }.into(),
    }
}

/// Purges the store's shards outside `assigned` (never the local shard);
/// returns every shard's seq afterwards and the shards purged.
async fn reconcile(ctx: &SyncContext, assigned: &[ShardId]) -> Result<(Vec<ShardProgress>, Vec<ShardId>), SyncError> {
    let store = Arc::clone(&ctx.shard);
    let assigned = assigned.to_vec();
    let (progress, unassigned, report) = blocking(move || {
        let unassigned: Vec<ShardId> = store
            .shards()?
            .into_iter()
            .map(|p| p.shard)
            .filter(|s| s.as_str() != LOCAL_SHARD && !assigned.contains(s))
            .collect();
        let report = if unassigned.is_empty() { None } else { Some(store.purge_shards(&unassigned)?) };
        Ok((store.shards()?, unassigned, report))
    })
    .await?;
    if let Some(report) = report {
        log::info!(shards:? = unassigned, removed = report.removed, kept = report.kept; "purged shards no longer assigned");
        update_gallery_metrics(ctx);
    }
    Ok((progress, unassigned))
}

async fn subscribe(client: &AsyncClient, topics: Vec<String>) {
    for topic in topics {
        if let Err(error) = client.subscribe(topic.clone(), qos1()).await {
            log::error!(topic = topic.as_str(), error:% = error; "cannot subscribe");
        }
    }
}

async fn unsubscribe(client: &AsyncClient, topics: Vec<String>) {
    for topic in topics {
        if let Err(error) = client.unsubscribe(topic.clone()).await {
            log::error!(topic = topic.as_str(), error:% = error; "cannot unsubscribe");
        }
    }
}

/// An owned [`DeviceInput`] produced by an action.
enum Report {
    Applied { shard: ShardId, seq: u64 },
    Refused { shard: ShardId, local_seq: u64 },
    Failed { shard: ShardId },
    AuditLoaded(Vec<facegate_protocol::AuditEvent>),
    OutboxChanged(u64),
    Purged(Vec<ShardId>),
    PurgeFailed(Vec<ShardId>),
}

impl Report {
    fn as_input(&self) -> DeviceInput<'static> {
        match self {
            Self::Applied { shard, seq } => DeviceInput::Applied { shard: shard.clone(), seq: *seq },
            Self::Refused { shard, local_seq } => {
                DeviceInput::ApplyRefused { shard: shard.clone(), local_seq: *local_seq }
            }
            Self::Failed { shard } => DeviceInput::ApplyFailed { shard: shard.clone() },
            Self::AuditLoaded(events) => DeviceInput::AuditLoaded { events: events.clone() },
            Self::OutboxChanged(depth) => DeviceInput::OutboxChanged { depth: *depth },
            Self::Purged(shards) => DeviceInput::Purged { shards: shards.clone() },
            Self::PurgeFailed(shards) => DeviceInput::PurgeFailed { shards: shards.clone() },
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| SyncError::Task(e.to_string()))?.map_err(SyncError::Store)
}

async fn publish(client: &AsyncClient, publish: Publish) {
    if let Err(error) = client.publish(publish.topic.clone(), qos1(), publish.retain, publish.payload).await {
        // Only when the request queue is closed (shutting down); the machine
        // retransmits what matters (audit, resync requests).
        log::warn!(topic = publish.topic.as_str(), error:% = error; "publish not queued");
    }
}

async fn execute(ctx: &SyncContext, client: &AsyncClient, action: DeviceAction) -> Result<Option<Report>, SyncError> {
    Ok(match action {
        DeviceAction::Publish(p) => {
            publish(client, p).await;
            None
        }
        DeviceAction::ApplyDelta(batch) => Some(apply_delta(ctx, batch).await),
        DeviceAction::ApplySnapshot { shard, seq, entries } => Some(apply_snapshot(ctx, shard, seq, entries).await),
        DeviceAction::LoadAudit { limit } => {
            let store = Arc::clone(&ctx.shard);
            Some(Report::AuditLoaded(blocking(move || store.pending_audit(limit)).await?))
        }
        DeviceAction::AckAudit { up_to_seq } => {
            let store = Arc::clone(&ctx.shard);
            let depth = blocking(move || {
                store.ack_audit(up_to_seq)?;
                store.outbox_depth()
            })
            .await?;
            if let Some(m) = &ctx.metrics {
                m.outbox_depth.set(depth as i64);
            }
            Some(Report::OutboxChanged(depth))
        }
        DeviceAction::Execute { id, command } => {
            // Recorded only once done: a crash in between runs it again.
            run_command(ctx, command).await?;
            state::write_last_command(&ctx.dir, id)?;
            None
        }
        DeviceAction::Subscribe(topics) => {
            log::info!(topics:? = topics; "shards assigned: subscribing");
            subscribe(client, topics).await;
            None
        }
        DeviceAction::Unsubscribe(topics) => {
            log::info!(topics:? = topics; "shards unassigned: unsubscribing");
            unsubscribe(client, topics).await;
            None
        }
        DeviceAction::PurgeShards(shards) => Some(purge(ctx, shards).await),
        DeviceAction::Persist(persisted) => {
            let saved = state::SyncState::from(persisted);
            state::write_sync_state(&ctx.dir, &saved)?;
            log::info!(epoch = saved.epoch, assignment = saved.assignment.version, shards:? = saved.assignment.shards; "sync state saved");
            None
        }
        DeviceAction::TrustKeys(keys) => {
            state::write_trusted_keys(&ctx.dir, &keys)?;
            let ids: Vec<String> = keys.iter().map(|k| k.key_id().to_string()).collect();
            log::warn!(keys:? = ids; "central signing key rolled over: trusting only the new key");
            None
        }
        DeviceAction::Rejected { topic, reason } => {
            if reason.is_ordering() {
                log::info!(topic = topic.as_str(), reason:% = reason; "delta not applied");
            } else {
                log::warn!(topic = topic.as_str(), reason:% = reason; "sync message rejected");
            }
            if let Some(m) = &ctx.metrics {
                m.sync_rejected.get_or_create(&crate::metrics::ReasonLabel { reason: reason.label().to_owned() }).inc();
            }
            None
        }
    })
}

async fn purge(ctx: &SyncContext, shards: Vec<ShardId>) -> Report {
    let store = Arc::clone(&ctx.shard);
    let target = shards.clone();
    match blocking(move || store.purge_shards(&target)).await {
        Ok(report) => {
            log::info!(shards:? = shards, removed = report.removed, kept = report.kept; "shards purged");
            update_gallery_metrics(ctx);
            Report::Purged(shards)
        }
        Err(error) => {
            log::error!(shards:? = shards, error:% = error; "purging shards failed; the door stays stale until it succeeds");
            Report::PurgeFailed(shards)
        }
    }
}

async fn apply_delta(ctx: &SyncContext, batch: DeltaBatch) -> Report {
    let shard = batch.shard.clone();
    let store = Arc::clone(&ctx.shard);
    match blocking(move || store.apply_delta(&batch)).await {
        Ok(DeltaOutcome::Applied(report)) => {
            log::info!(shard = shard.as_str(), seq = report.seq, upserted = report.upserted, removed = report.removed; "delta applied");
            update_gallery_metrics(ctx);
            Report::Applied { shard, seq: report.seq }
        }
        Ok(DeltaOutcome::AlreadyApplied { local_seq }) => Report::Applied { shard, seq: local_seq },
        Ok(DeltaOutcome::Resync { local_seq }) => Report::Refused { shard, local_seq },
        Err(error) => {
            log::error!(shard = shard.as_str(), error:% = error; "applying a delta failed");
            Report::Failed { shard }
        }
    }
}

async fn apply_snapshot(ctx: &SyncContext, shard: ShardId, seq: u64, entries: Vec<SnapshotEntry>) -> Report {
    let store = Arc::clone(&ctx.shard);
    let target = shard.clone();
    match blocking(move || store.apply_snapshot(&target, seq, &entries)).await {
        Ok(SnapshotOutcome::Applied(report)) => {
            log::info!(shard = shard.as_str(), seq = report.seq, identities = report.upserted; "snapshot applied");
            update_gallery_metrics(ctx);
            Report::Applied { shard, seq: report.seq }
        }
        Ok(SnapshotOutcome::Stale { local_seq }) => Report::Refused { shard, local_seq },
        Err(error) => {
            log::error!(shard = shard.as_str(), error:% = error; "applying a snapshot failed");
            Report::Failed { shard }
        }
    }
}

fn update_gallery_metrics(ctx: &SyncContext) {
    if let Some(m) = &ctx.metrics {
        let view = ctx.shard.read();
        m.gallery_identities.set(view.identities.len() as i64);
        m.gallery_templates.set(view.gallery.len() as i64);
    }
}

async fn run_command(ctx: &SyncContext, command: Command) -> Result<(), SyncError> {
    match command {
        Command::Resync => log::info!("resync ordered by the server"),
        Command::Wipe => {
            log::warn!("wipe ordered by the server: emptying every synced shard");
            // Shards first, marker last: a failure in between leaves an
            // empty gallery or a retry, never a marker over a full gallery.
            empty_synced_shards(ctx).await?;
            state::write_atomically(&ctx.dir, WIPED, b"wiped by the server\n")?;
        }
        Command::RotateKey => {
            let store = Arc::clone(&ctx.shard);
            let key_path = ctx.key_path.clone();
            blocking(move || crate::store::rotate_key_file(store.store(), &key_path)).await?;
            log::info!("device key rotated");
        }
    }
    Ok(())
}

/// Empties every shard but the local one, each in one flushed transaction.
async fn empty_synced_shards(ctx: &SyncContext) -> Result<(), SyncError> {
    let store = Arc::clone(&ctx.shard);
    let emptied = blocking(move || {
        for progress in store.shards()? {
            if progress.shard.as_str() != crate::store::LOCAL_SHARD {
                store.apply_snapshot(&progress.shard, progress.seq, &[])?;
            }
        }
        Ok(())
    })
    .await;
    update_gallery_metrics(ctx);
    emptied
}

#[cfg(test)]
#[path = "shell_tests.rs"]
mod tests;
