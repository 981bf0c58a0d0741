//! The handler task of the sync service: device uplinks into [`ServerSync`],
//! its actions carried out against MongoDB.
//!
//! - Every uplink is attributed by its topic's device id. The device is
//!   loaded (cached for [`DEVICE_CACHE`]): unknown, revoked and keyless
//!   devices are refused and counted; the others' public key goes to the
//!   machine, which verifies the signature before believing anything.
//! - Resync reads (log or snapshot) are answered only for shards assigned
//!   to the device now; others are answered [`LogRead::Unassigned`] with
//!   nothing read. A device's claimed seq never reaches the log read unless
//!   it is below the head, so no seq overflows a conversion.
//! - Snapshot reads run in their own tasks (one per device at a time); the
//!   result comes back through a channel as [`ServerInput::LogRead`], so a
//!   large shard never holds up other devices' uplinks.
//! - Applied seqs (from `Applied`, resync requests and statuses) are
//!   recorded only for assigned shards and only up to the shard's head: a
//!   forged or huge seq never makes an erasure look complete.
//! - A status that names the previous signing key as trusted is answered
//!   with a `KeyRollover` signed by that key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate_protocol::sync::server::{FreshnessRead, LogEntry, LogRead, ServerAction, ServerInput, ServerSync};
use facegate_protocol::topics::{self, Topic};
use facegate_protocol::{
    Assignment, AuditBatch, DeviceId, DevicePublicKey, DeviceStatus, KeyId, ShardId, ShardProgress, SigningKey,
};
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::{mpsc, watch};

use super::service::{SyncStats, until_stopped};
use crate::store::{DeviceDoc, DeviceState, Store, StoreError, now_millis};

/// Log entries read per resync answer.
const RESYNC_PAGE: usize = 4096;
/// How long a device's state (active, groups, key) is cached.
const DEVICE_CACHE: Duration = Duration::from_secs(5);
/// How long the log epoch is cached.
const EPOCH_CACHE: Duration = Duration::from_secs(5);
/// Most devices cached before the cache is emptied.
const MAX_CACHED_DEVICES: usize = 100_000;

/// A finished snapshot read: (device, shard, after_seq, what was read).
type SnapshotDone = (DeviceId, ShardId, u64, LogRead);

/// What the handler knows of a device.
#[derive(Debug, Clone)]
struct KnownDevice {
    active: bool,
    key: Option<DevicePublicKey>,
    groups: HashSet<String>,
    at: Instant,
}

impl KnownDevice {
    fn of(d: &DeviceDoc) -> Self {
        let key = d.public_key.as_ref().and_then(|k| DevicePublicKey::from_point(&k.bytes).ok());
        Self {
            active: d.state == DeviceState::Active,
            key,
            groups: d.groups.iter().cloned().collect(),
            at: Instant::now(),
        }
    }

    fn assigned(&self, shard: &ShardId) -> bool {
        self.groups.contains(shard.as_str())
    }
}

/// Carries out the server machine's actions.
pub(super) struct Handler {
    machine: ServerSync,
    store: Store,
    client: AsyncClient,
    stats: Arc<SyncStats>,
    devices: HashMap<DeviceId, KnownDevice>,
    epoch: Option<(u64, Instant)>,
    current_key: KeyId,
    previous_key: Option<SigningKey>,
    /// Devices with a snapshot read in flight.
    snapshots: HashSet<DeviceId>,
    snapshot_done: mpsc::Sender<SnapshotDone>,
    snapshot_results: Option<mpsc::Receiver<SnapshotDone>>,
}

impl Handler {
    pub(super) fn new(
        machine: ServerSync,
        store: Store,
        client: AsyncClient,
        stats: Arc<SyncStats>,
        current_key: KeyId,
        previous_key: Option<SigningKey>,
    ) -> Self {
        let (snapshot_done, snapshot_results) = mpsc::channel(64);
        Self {
            machine,
            store,
            client,
            stats,
            devices: HashMap::new(),
            epoch: None,
            current_key,
            previous_key,
            snapshots: HashSet::new(),
            snapshot_done,
            snapshot_results: Some(snapshot_results),
        }
    }

    pub(super) async fn run(
        mut self,
        mut incoming: mpsc::Receiver<(String, Vec<u8>)>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let Some(mut snapshots) = self.snapshot_results.take() else { return };
        loop {
            tokio::select! {
                () = until_stopped(&mut stopped) => return,
                message = incoming.recv() => match message {
                    Some((topic, payload)) => self.received(&topic, &payload).await,
                    None => return,
                },
                Some((device, shard, after_seq, read)) = snapshots.recv() => {
                    self.snapshots.remove(&device);
                    let actions =
                        self.machine.handle(now_millis(), ServerInput::LogRead { device, shard, after_seq, read });
                    self.carry_out(actions).await;
                }
            }
        }
    }

    async fn received(&mut self, topic: &str, payload: &[u8]) {
        self.stats.count("received");
        let device = match topics::parse(topic) {
            Some(Topic::DeviceUp(d) | Topic::DeviceStatus(d)) => d,
            _ => {
                log::warn!(topic; "message on a topic the server does not serve refused");
                self.stats.count("rejected_unexpected_topic");
                return;
            }
        };
        let known = match self.device(&device).await {
            Ok(Some(known)) if known.active => known,
            Ok(_) => {
                log::warn!(device:% = device, topic; "message from an unknown or revoked device refused");
                self.stats.count("rejected_unknown_device");
                return;
            }
            Err(e) => {
                log::warn!(error:% = e, device:% = device; "cannot read a device's state; its message is dropped");
                self.stats.count("device_lookup_failed");
                return;
            }
        };
        let Some(key) = known.key else {
            log::warn!(device:% = device, topic;
                "message from a device with no recorded uplink key refused (provisioned before uplinks were signed: provision it again)");
            self.stats.count("rejected_no_device_key");
            return;
        };
        let actions = self.machine.handle(now_millis(), ServerInput::Received { topic, payload, key: &key });
        self.carry_out(actions).await;
    }

    /// The device's state, from the cache while fresh. `None`: unknown.
    async fn device(&mut self, device: &DeviceId) -> Result<Option<KnownDevice>, StoreError> {
        if let Some(known) = self.devices.get(device)
            && known.at.elapsed() < DEVICE_CACHE
        {
            return Ok(Some(known.clone()));
        }
        let Some(doc) = self.store.device(device.as_str()).await? else {
            self.devices.remove(device);
            return Ok(None);
        };
        let known = KnownDevice::of(&doc);
        if self.devices.len() >= MAX_CACHED_DEVICES {
            self.devices.clear();
        }
        self.devices.insert(device.clone(), known.clone());
        Ok(Some(known))
    }

    /// Whether `shard` is assigned to `device` now (as cached); a device
    /// that cannot be read has no shards.
    async fn assigned(&mut self, device: &DeviceId, shard: &ShardId) -> bool {
        match self.device(device).await {
            Ok(Some(known)) => known.active && known.assigned(shard),
            Ok(None) => false,
            Err(e) => {
                log::warn!(error:% = e, device:% = device; "cannot read a device's shards");
                false
            }
        }
    }

    /// The log epoch (cached briefly).
    async fn epoch(&mut self) -> Result<u64, StoreError> {
        if let Some((epoch, at)) = self.epoch
            && at.elapsed() < EPOCH_CACHE
        {
            return Ok(epoch);
        }
        let epoch = self.store.log_epoch().await?;
        self.epoch = Some((epoch, Instant::now()));
        Ok(epoch)
    }

    async fn publish(&self, topic: String, retain: bool, payload: Vec<u8>) {
        match self.client.publish(topic.clone(), QoS::AtLeastOnce, retain, payload).await {
            Ok(()) => self.stats.count("published_down"),
            Err(e) => {
                self.stats.count("publish_failed");
                log::warn!(error:% = e, topic = topic.as_str(); "publish failed");
            }
        }
    }

    async fn carry_out(&mut self, actions: Vec<ServerAction>) {
        let mut queue: VecDeque<ServerAction> = actions.into();
        while let Some(action) = queue.pop_front() {
            let input = match action {
                ServerAction::Publish(p) => {
                    self.publish(p.topic, p.retain, p.payload).await;
                    None
                }
                ServerAction::ReadLog { device, shard, after_seq } => {
                    let read = if self.assigned(&device, &shard).await {
                        self.stats.count("resync_answered");
                        self.read_log(&shard, after_seq).await
                    } else {
                        LogRead::Unassigned
                    };
                    Some(ServerInput::LogRead { device, shard, after_seq, read })
                }
                ServerAction::ReadSnapshot { device, shard, after_seq } => {
                    if !self.assigned(&device, &shard).await {
                        Some(ServerInput::LogRead { device, shard, after_seq, read: LogRead::Unassigned })
                    } else if self.snapshots.contains(&device) {
                        // One snapshot read per device at a time; it asks again.
                        self.stats.count("snapshot_busy");
                        Some(ServerInput::LogRead { device, shard, after_seq, read: LogRead::Failed })
                    } else {
                        self.start_snapshot(device, shard, after_seq).await
                    }
                }
                ServerAction::StoreAudit { device, epoch, events, up_to_seq } => {
                    Some(self.store_audit(device, epoch, events, up_to_seq).await)
                }
                ServerAction::ReadFreshness { device, nonce } => {
                    let read = self.read_freshness(&device).await;
                    if read.is_some() {
                        self.stats.count("freshness_answered");
                    }
                    Some(ServerInput::FreshnessRead { device, nonce, read })
                }
                ServerAction::RecordApplied { device, shard, seq } => {
                    self.record_applied(&device, &shard, seq).await;
                    None
                }
                ServerAction::RecordStatus(status) => {
                    self.record_status(status).await;
                    None
                }
                ServerAction::Rejected { topic, reason } => {
                    if reason.is_ordering() {
                        log::info!(topic = topic.as_str(), reason:% = reason; "message refused");
                    } else {
                        log::warn!(topic = topic.as_str(), reason:% = reason; "message refused");
                    }
                    self.stats.count(&format!("rejected_{}", reason.label()));
                    None
                }
                ServerAction::DeviceAhead { device, shard, device_seq, head } => {
                    log::error!(device:% = device, shard:% = shard, device_seq, head;
                        "a device claims a sequence number beyond the delta log (database restored from an older backup? start a new epoch)");
                    self.stats.count("device_ahead");
                    None
                }
            };
            if let Some(input) = input {
                let follow = self.machine.handle(now_millis(), input);
                for a in follow.into_iter().rev() {
                    queue.push_front(a);
                }
            }
        }
    }

    /// Starts a snapshot read in its own task; its result comes back
    /// through the snapshot channel. Returns an input only when it could
    /// not be started.
    async fn start_snapshot(
        &mut self,
        device: DeviceId,
        shard: ShardId,
        after_seq: u64,
    ) -> Option<ServerInput<'static>> {
        let epoch = match self.epoch().await {
            Ok(e) => e,
            Err(e) => {
                log::warn!(error:% = e, shard:% = shard; "cannot read the log epoch for a snapshot");
                return Some(ServerInput::LogRead { device, shard, after_seq, read: LogRead::Failed });
            }
        };
        self.snapshots.insert(device.clone());
        let store = self.store.clone();
        let stats = Arc::clone(&self.stats);
        let done = self.snapshot_done.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let read = match store.shard_snapshot(&shard).await {
                Ok((seq, entries)) => {
                    log::info!(device:% = device, shard:% = shard, epoch, seq, identities = entries.len(),
                        read_ms = started.elapsed().as_millis() as u64; "snapshot read; sending it");
                    stats.count("snapshot_sent");
                    LogRead::Snapshot { epoch, seq, entries }
                }
                Err(e) => {
                    log::warn!(error:% = e, shard:% = shard; "snapshot read failed");
                    LogRead::Failed
                }
            };
            let _ = done.send((device, shard, after_seq, read)).await;
        });
        None
    }

    async fn read_log(&mut self, shard: &ShardId, after_seq: u64) -> LogRead {
        let read = async {
            let epoch = self.epoch().await?;
            let head = self.store.shard_head(shard).await?;
            if after_seq >= head {
                // Nothing after the device's seq (or it claims more than
                // the log has: the machine tells). Not read at all, so a
                // huge claimed seq is never converted.
                return Ok::<_, StoreError>((epoch, head, None));
            }
            let batch = self.store.read_deltas_after(shard, after_seq, RESYNC_PAGE).await?;
            let mut head = head;
            if batch.is_none() {
                // Nothing readable although the log goes on: compacted (the
                // device needs a snapshot), unless the next entry is there
                // and only held until its commit is visible — then the log
                // ends at the device's seq for now.
                let next = self.store.delta_entries_after(shard.as_str(), after_seq, 1).await?;
                let expected = i64::try_from(after_seq).ok().and_then(|s| s.checked_add(1));
                if next.first().is_some_and(|e| Some(e.seq) == expected) {
                    head = after_seq;
                }
            }
            Ok((epoch, head, batch))
        };
        match read.await {
            Ok((epoch, head, batch)) => {
                let entries = batch.and_then(LogEntry::from_batch).unwrap_or_default();
                LogRead::Entries { epoch, head, entries }
            }
            Err(e) => {
                log::warn!(error:% = e, shard:% = shard; "delta log read failed");
                LogRead::Failed
            }
        }
    }

    async fn store_audit(
        &mut self,
        device: DeviceId,
        epoch: u64,
        events: Vec<facegate_protocol::AuditEvent>,
        up_to_seq: u64,
    ) -> ServerInput<'static> {
        let count = events.len() as u64;
        match self.store.store_audit_batch(&device, &AuditBatch { events }).await {
            Ok(stored) => {
                self.stats.add("audit_inserted", stored.inserted);
                self.stats.add("audit_duplicates", stored.duplicates);
                for key in &stored.conflict_keys {
                    log::error!(device:% = device, epoch, key = key.as_str();
                        "an audit event reuses the key of a stored event with other content (kept in audit_conflicts; the stored one stays)");
                }
                self.stats.add("audit_conflict", stored.conflicts);
                ServerInput::AuditStored { device, epoch, up_to_seq }
            }
            Err(e) => {
                self.stats.count("audit_store_failed");
                log::warn!(error:% = e, device:% = device, events = count; "audit batch not stored");
                ServerInput::AuditStoreFailed { device, up_to_seq }
            }
        }
    }

    /// The epoch, the device's assignment (read now, not from the cache)
    /// and the heads of its shards: three point reads, one of them cached.
    async fn read_freshness(&mut self, device: &DeviceId) -> Option<FreshnessRead> {
        let read = async {
            let epoch = self.epoch().await?;
            let Some(doc) = self.store.device(device.as_str()).await? else {
                return Ok(None);
            };
            let known = KnownDevice::of(&doc);
            if !known.active {
                return Ok(None);
            }
            self.devices.insert(device.clone(), known);
            let mut shards: Vec<&str> = doc.groups.iter().map(String::as_str).collect();
            shards.sort_unstable();
            shards.dedup();
            let heads = self.store.shard_heads(&shards).await?;
            let mut assigned = Vec::with_capacity(shards.len());
            let mut progress = Vec::with_capacity(shards.len());
            for s in shards {
                let Ok(shard) = ShardId::new(s.to_string()) else { continue };
                progress.push(ShardProgress { shard: shard.clone(), seq: heads.get(s).copied().unwrap_or(0) });
                assigned.push(shard);
            }
            let version = u64::try_from(doc.assignment_version).unwrap_or(0);
            Ok::<_, StoreError>(Some(FreshnessRead {
                epoch,
                assignment: Assignment { version, shards: assigned },
                heads: progress,
            }))
        };
        match read.await {
            Ok(read) => read,
            Err(e) => {
                log::warn!(error:% = e, device:% = device; "freshness read failed");
                self.stats.count("freshness_failed");
                None
            }
        }
    }

    /// Records an applied seq the device signed, if the shard is assigned
    /// to it and the seq is not beyond the shard's head.
    async fn record_applied(&mut self, device: &DeviceId, shard: &ShardId, seq: u64) {
        if !self.assigned(device, shard).await {
            log::info!(device:% = device, shard:% = shard, seq; "applied seq of a shard not assigned to the device ignored");
            self.stats.count("rejected_applied_unassigned");
            return;
        }
        let head = match self.store.shard_head(shard).await {
            Ok(head) => head,
            Err(e) => {
                log::warn!(error:% = e, shard:% = shard; "cannot read a shard's head");
                return;
            }
        };
        if seq > head {
            log::warn!(device:% = device, shard:% = shard, seq, head; "applied seq beyond the log's head ignored");
            self.stats.count("rejected_applied_beyond_head");
            return;
        }
        if let Err(e) = self.store.record_device_applied(device.as_str(), shard.as_str(), seq).await {
            log::warn!(error:% = e, device:% = device, shard:% = shard; "cannot record an applied seq");
        }
    }

    async fn record_status(&mut self, status: DeviceStatus) {
        let device = status.device.clone();
        let result = self
            .store
            .record_device_status(
                device.as_str(),
                status.online,
                status.model_id.as_deref(),
                Some(status.version.as_str()),
            )
            .await;
        if let Err(e) = result {
            log::warn!(error:% = e, device:% = device; "cannot record a device status");
        }
        let shards: Vec<String> = status.shards.iter().map(|p| p.shard.to_string()).collect();
        let reported = self
            .store
            .record_device_sync_report(device.as_str(), status.assignment, &shards, status.trusted_key.as_deref())
            .await;
        if let Err(e) = reported {
            log::warn!(error:% = e, device:% = device; "cannot record a device's sync report");
        }
        if let Err(e) = self.store.device_reported(device.as_str(), status.last_command).await {
            log::warn!(error:% = e, device:% = device; "cannot record the device's commands");
        }
        self.stats.count("status_recorded");
        if let Some(trusted) = &status.trusted_key {
            self.roll_over(&device, trusted).await;
        }
    }

    /// Sends a device that still trusts the previous signing key the
    /// rollover to the current one (signed by the previous key).
    async fn roll_over(&mut self, device: &DeviceId, trusted: &str) {
        if *trusted == self.current_key.to_string() {
            return;
        }
        let Some(previous) = self.previous_key.as_ref().filter(|k| k.key_id().to_string() == *trusted) else {
            log::warn!(device:% = device, trusted_key = trusted;
                "the device trusts neither the current nor the previous signing key: provision it again");
            self.stats.count("trusted_key_unknown");
            return;
        };
        match self.machine.rollover(now_millis(), device, previous) {
            Ok(p) => {
                log::info!(device:% = device, from = trusted, to:% = self.current_key; "signing-key rollover sent");
                self.stats.count("key_rollover_sent");
                self.publish(p.topic, p.retain, p.payload).await;
            }
            Err(e) => log::error!(error:% = e, device:% = device; "a key rollover cannot be encoded"),
        }
    }
}
