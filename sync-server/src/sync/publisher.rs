//! The publisher task of the sync service: while this replica holds the
//! `delta-publisher` lease, publishes every shard's new delta-log entries
//! as signed batches, pushes changed assignments (signed
//! [`facegate_protocol::Down::Assignment`]) and pending commands to their
//! devices, and compacts the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate_protocol::sync::Publish;
use facegate_protocol::sync::server::ServerSync;
use facegate_protocol::{Assignment, DeviceId, ShardId};
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::watch;

use super::mosquitto::AclFollower;
use super::service::{SyncStats, until_stopped};
use crate::store::{Store, StoreError, now_millis};

/// Log entries read per batch when publishing (halved while a batch does
/// not fit one message).
const PUBLISH_PAGE: usize = 256;
const LEASE_ID: &str = "delta-publisher";
/// Assignments pushed per poll at most.
const ASSIGNMENTS_PER_POLL: i64 = 200;

/// Publishes the delta log, while holding the lease.
pub(super) struct Publisher {
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
    /// mosquitto's ACL kept in step with the database, and when it is
    /// next compared (registrations and revocations) without a push.
    acl: Option<(AclFollower, Instant)>,
}

/// How often the mosquitto ACL is compared with the database when no
/// assignment was pushed (a device registered or revoked).
const ACL_CHECK: Duration = Duration::from_secs(5);

/// How long the delta log is kept (see [`Store::compact_delta_log`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Retention {
    pub(super) max_age: Duration,
    pub(super) interval: Duration,
}

impl Publisher {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        machine: ServerSync,
        store: Store,
        client: AsyncClient,
        stats: Arc<SyncStats>,
        me: String,
        lease: Duration,
        max_message_bytes: usize,
        retention: Retention,
        connected: Arc<std::sync::atomic::AtomicBool>,
        acl: Option<AclFollower>,
    ) -> Self {
        Self {
            machine,
            store,
            client,
            stats,
            me,
            lease,
            max_message_bytes,
            holding: false,
            published: HashMap::new(),
            retention,
            compacted: HashMap::new(),
            connected,
            acl: acl.map(|follower| (follower, Instant::now())),
        }
    }

    pub(super) async fn run(mut self, interval: Duration, mut stopped: watch::Receiver<bool>) {
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
        if self.holding
            && let Err(e) = self.store.release_lease(LEASE_ID, &self.me).await
        {
            log::debug!(error:% = e; "the publisher lease was not released (it expires)");
        }
    }

    /// Takes or renews the lease; whether this replica holds it.
    async fn renew_lease(&mut self) -> Result<bool, StoreError> {
        let ttl = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let holding = self.store.renew_lease(LEASE_ID, &self.me, ttl).await?;
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

    /// Pushes every changed assignment as a signed `Assignment` to its
    /// device; marked pushed only once published (the device ignores a
    /// version it has, so a repeat is harmless).
    async fn push_assignments(&mut self) -> Result<usize, StoreError> {
        let mut pushed = 0;
        for device in self.store.pending_assignments(ASSIGNMENTS_PER_POLL).await? {
            let Ok(id) = DeviceId::new(device.id.clone()) else { continue };
            let mut shards: Vec<ShardId> = device.groups.iter().filter_map(|g| ShardId::new(g.clone()).ok()).collect();
            shards.sort();
            let version = u64::try_from(device.assignment_version).unwrap_or(0);
            let publish = match self.machine.assignment(now_millis(), &id, Assignment { version, shards }) {
                Ok(p) => p,
                Err(e) => {
                    log::error!(error:% = e, device:% = id, version; "an assignment cannot be encoded");
                    continue;
                }
            };
            if !self.send(publish, "assignment").await {
                return Ok(pushed);
            }
            pushed += 1;
            self.store.assignment_pushed(&device.id, device.assignment_version).await?;
            self.stats.count("assignment_pushed");
            log::info!(device:% = id, version, shards:? = device.groups; "assignment pushed");
        }
        Ok(pushed)
    }

    /// Brings mosquitto's ACL in step with the database: at once after an
    /// assignment was pushed, else every [`ACL_CHECK`].
    async fn follow_acl(&mut self, assignments_pushed: bool) {
        let Some((follower, due)) = &mut self.acl else { return };
        if !assignments_pushed && Instant::now() < *due {
            return;
        }
        *due = Instant::now() + ACL_CHECK;
        match follower.follow(&self.store).await {
            Ok(false) => {}
            Ok(true) => {
                self.stats.count("acl_reloaded");
                log::info!("mosquitto ACL rewritten from the database and reloaded");
            }
            Err(e) => {
                self.stats.count("acl_failed");
                log::error!(error:% = e; "mosquitto ACL not brought in step with the database; retrying");
            }
        }
    }

    async fn tick(&mut self) -> Result<(), StoreError> {
        if !self.renew_lease().await? {
            return Ok(());
        }
        let pushed = self.push_assignments().await?;
        self.follow_acl(pushed > 0).await;
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
            if !self.send(publish, "command").await {
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
            if !self.send(publish, "delta").await {
                return Ok(());
            }
            self.stats.count("delta_published");
            self.stats.add("delta_ops_published", batch.ops.len() as u64);
            log::debug!(shard:% = shard, base_seq = batch.base_seq, seq = batch.seq, ops = batch.ops.len(); "delta published");
            self.record(shard, batch.seq).await?;
        }
        Ok(())
    }

    /// Publishes at QoS 1; a failure (the client's queue closed or full) is
    /// logged and counted, and the caller stops this round: what was not
    /// sent stays pending and goes out on the next one.
    async fn send(&self, publish: Publish, what: &str) -> bool {
        let topic = publish.topic.clone();
        match self.client.publish(publish.topic, QoS::AtLeastOnce, false, publish.payload).await {
            Ok(()) => true,
            Err(e) => {
                log::warn!(error:% = e, topic = topic.as_str(), what; "publish failed; retried next round");
                self.stats.count("publish_failed");
                false
            }
        }
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
