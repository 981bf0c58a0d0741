//! The kiosk's side of sync: a pure state machine.
//!
//! The shell (the daemon's MQTT client) feeds it [`DeviceInput`]s with the
//! current time and carries out the [`DeviceAction`]s it returns, in order:
//!
//! | action | the shell… | and then reports |
//! | --- | --- | --- |
//! | [`DeviceAction::Publish`] | publishes with QoS 1 | — |
//! | [`DeviceAction::ApplyDelta`] | applies the batch in one sled transaction | [`DeviceInput::Applied`], [`DeviceInput::ApplyRefused`] or [`DeviceInput::ApplyFailed`] |
//! | [`DeviceAction::ApplySnapshot`] | replaces the shard in one transaction | the same |
//! | [`DeviceAction::LoadAudit`] | reads up to `limit` pending events, oldest first | [`DeviceInput::AuditLoaded`] |
//! | [`DeviceAction::AckAudit`] | deletes outbox events `seq <= up_to_seq` | [`DeviceInput::OutboxChanged`] |
//! | [`DeviceAction::Execute`] | runs the command, then stores `id` as the last command id | — |
//! | [`DeviceAction::Subscribe`] / [`DeviceAction::Unsubscribe`] | changes the MQTT subscriptions | — |
//! | [`DeviceAction::PurgeShards`] | forgets the shards' identities and seqs in one transaction | [`DeviceInput::Purged`] or [`DeviceInput::PurgeFailed`] |
//! | [`DeviceAction::Persist`] | writes the epoch and assignment durably | — |
//! | [`DeviceAction::TrustKeys`] | writes the central keys to trust durably | — |
//! | [`DeviceAction::Rejected`] | logs and counts it | — |
//!
//! # Freshness
//!
//! Every uplink is signed with the device's key. Every
//! [`DeviceConfig::freshness_interval_ms`] the machine asks the server for a
//! [`FreshnessProof`] with a fresh random nonce. A proof that echoes a
//! nonce this machine sent makes each shard the device has applied up to the
//! proof's head *verified as of the moment the request was sent*; a shard
//! behind the head becomes verified when it catches up. [`DeviceSync::fresh_until`]
//! is the moment the door turns stale: the oldest shard verification plus
//! [`DeviceConfig::max_staleness_ms`]. Replayed, withheld or delayed proofs
//! can only make the door staler, never fresher; a proof of another epoch
//! makes the device forget its synced shards and fetch them anew; the
//! proof's assignment adds and drops shards (dropped ones are purged).
//!
//! It also calls [`DeviceSync::handle`] with [`DeviceInput::Tick`] at
//! [`DeviceSync::next_deadline`], and with [`DeviceInput::OutboxChanged`]
//! whenever a decision is appended to the outbox. See [`crate::sync`] for the
//! invariants.

use std::collections::BTreeMap;

use crate::codec::{Message, decode_verified_with_key, encode_device_signed};
use crate::ids::{DeviceId, ShardId};
use crate::messages::{
    Assignment, AuditEvent, Command, DeltaBatch, DeviceStatus, Down, DownMessage, MAX_AUDIT_BATCH_EVENTS,
    ShardProgress, SnapshotChunk, SnapshotEntry, UnixMillis, Up, UpMessage,
};
use crate::signing::{DeviceSigningKey, KeyId, PublicKey, TrustedKeys};
use crate::sync::{Backoff, Publish, Rejection, after};

use crate::topics::{self, Topic};
use freshness::{Freshness, Outstanding};

/// Timers and bounds of the device machine, in milliseconds where a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// First wait before repeating an unanswered resync request.
    pub resync_backoff_min_ms: u64,
    /// Longest wait between resync requests.
    pub resync_backoff_max_ms: u64,
    /// Every shard is checked against the server this often even without a
    /// sign of a gap, so a lost last delta is noticed.
    pub resync_interval_ms: u64,
    /// Most events per audit batch (at most [`MAX_AUDIT_BATCH_EVENTS`]).
    pub audit_batch_events: usize,
    /// First wait for an audit acknowledgement before retransmitting.
    pub audit_retransmit_min_ms: u64,
    /// Longest wait for an audit acknowledgement.
    pub audit_retransmit_max_ms: u64,
    /// Status changes are published at most this often (on connect at once).
    pub status_min_interval_ms: u64,
    /// An incomplete snapshot is dropped after this long.
    pub snapshot_timeout_ms: u64,
    /// Snapshots assembled at once per shard (answers to repeated requests
    /// may interleave); the oldest is dropped beyond this.
    pub max_snapshot_assemblies: usize,
    /// Batches ahead of the applied sequence kept per shard until the
    /// missing ones arrive.
    pub max_buffered_batches: usize,
    /// The door is stale this long after its oldest shard was last verified
    /// current by a freshness proof; 0: never stale (an explicit choice).
    pub max_staleness_ms: u64,
    /// A freshness proof is asked for this often while connected.
    pub freshness_interval_ms: u64,
}

impl DeviceConfig {
    /// How often to ask for a proof so that a connected door is never stale
    /// under `max_staleness_ms`: four tries per staleness window, at least
    /// every second, at most every minute.
    pub fn freshness_interval_for(max_staleness_ms: u64) -> u64 {
        if max_staleness_ms == 0 { 60_000 } else { (max_staleness_ms / 4).clamp(1_000, 60_000) }
    }
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            resync_backoff_min_ms: 1_000,
            resync_backoff_max_ms: 60_000,
            resync_interval_ms: 300_000,
            audit_batch_events: 64,
            audit_retransmit_min_ms: 10_000,
            audit_retransmit_max_ms: 120_000,
            status_min_interval_ms: 5_000,
            snapshot_timeout_ms: 60_000,
            max_snapshot_assemblies: 2,
            max_buffered_batches: 16,
            max_staleness_ms: DEFAULT_MAX_STALENESS_MS,
            freshness_interval_ms: Self::freshness_interval_for(DEFAULT_MAX_STALENESS_MS),
        }
    }
}

/// The default staleness bound: 5 minutes (see the README's staleness
/// arithmetic).
pub const DEFAULT_MAX_STALENESS_MS: u64 = 300_000;

/// Outstanding freshness requests remembered (answers may come late or out
/// of order; older ones are forgotten).
const MAX_OUTSTANDING_NONCES: usize = 8;
/// Proof heads a shard waits to reach, newest kept.
const MAX_PENDING_PROOFS: usize = 4;

/// What the device has persisted and hands the machine at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceState {
    /// Every shard assigned to the device with its applied sequence number
    /// (0 for a shard never synced).
    pub shards: Vec<ShardProgress>,
    /// The version of that assignment (0: as provisioned).
    pub assignment_version: u64,
    /// The log epoch the applied seqs belong to (0: not known yet; the
    /// first proof's epoch is adopted).
    pub epoch: u64,
    /// The id of the last command executed (0: none).
    pub last_command_id: u64,
    /// Events in the audit outbox.
    pub outbox_depth: u64,
    /// The outbox's epoch ([`AuditEvent::epoch`]): acknowledgements of
    /// another epoch are ignored.
    pub outbox_epoch: u64,
    /// Secret random bytes the freshness nonces are derived from: draw them
    /// anew on every start (a proof answering an earlier run's request must
    /// never match this run's nonces).
    pub nonce_seed: [u8; 32],
}

/// The epoch and assignment to write durably ([`DeviceAction::Persist`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    pub epoch: u64,
    pub assignment: Assignment,
}

/// What the device says about itself in its retained status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusInfo {
    pub model_id: Option<String>,
    /// The daemon's version.
    pub version: String,
    /// Short health words: "ok", "camera-lost", …
    pub health: String,
}

/// Something that happened, for [`DeviceSync::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceInput<'a> {
    /// The MQTT session is up (after CONNACK and the subscriptions).
    Connected,
    /// The MQTT session is down.
    Disconnected,
    /// A publication arrived on `topic`.
    Received { topic: &'a str, payload: &'a [u8] },
    /// The store is now at `seq` for `shard` after an apply (also when it
    /// found the batch already applied and reports its own seq).
    Applied { shard: ShardId, seq: u64 },
    /// The store refused the apply because it is at `local_seq` (a base or
    /// staleness mismatch); nothing changed.
    ApplyRefused { shard: ShardId, local_seq: u64 },
    /// The store failed (I/O); nothing changed.
    ApplyFailed { shard: ShardId },
    /// The outbox now holds `depth` events (after an append or an ack).
    OutboxChanged { depth: u64 },
    /// The answer to [`DeviceAction::LoadAudit`]: the oldest pending events.
    AuditLoaded { events: Vec<AuditEvent> },
    /// Health or model changed.
    StatusChanged(StatusInfo),
    /// The shards of a [`DeviceAction::PurgeShards`] are forgotten.
    Purged { shards: Vec<ShardId> },
    /// The purge failed; nothing changed (the machine retries, and the door
    /// stays stale meanwhile).
    PurgeFailed { shards: Vec<ShardId> },
    /// Time passed (call at [`DeviceSync::next_deadline`]).
    Tick,
}

/// Something for the shell to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceAction {
    Publish(Publish),
    /// Apply in one transaction with the new seq, then report back.
    ApplyDelta(DeltaBatch),
    /// Replace `shard` by `entries` at `seq` in one transaction, then report back.
    ApplySnapshot {
        shard: ShardId,
        seq: u64,
        entries: Vec<SnapshotEntry>,
    },
    /// Read up to `limit` pending audit events, oldest first, and report them.
    LoadAudit {
        limit: usize,
    },
    /// Delete every outbox event with `seq <= up_to_seq`, then report the depth.
    AckAudit {
        up_to_seq: u64,
    },
    /// Run the command, then persist `id` as the last command id. For
    /// [`Command::Resync`] the machine has already asked; for
    /// [`Command::Wipe`] it has stopped syncing (the shell should
    /// decommission the device so a restart does not sync again).
    Execute {
        id: u64,
        command: Command,
    },
    /// Subscribe to these topics (QoS 1): shards newly assigned.
    Subscribe(Vec<String>),
    /// Unsubscribe from these topics: shards no longer assigned.
    Unsubscribe(Vec<String>),
    /// Forget every identity of these shards (unless another shard holds it)
    /// and their seqs, in one transaction, then report [`DeviceInput::Purged`].
    PurgeShards(Vec<ShardId>),
    /// Write the epoch and assignment durably (after any purge they needed).
    Persist(Persisted),
    /// Trust only these central keys from now on (a signing-key rollover):
    /// write them durably.
    TrustKeys(Vec<PublicKey>),
    /// A message was refused; log and count it.
    Rejected {
        topic: String,
        reason: Rejection,
    },
}

#[derive(Debug)]
struct Assembly {
    snapshot: u64,
    seq: u64,
    count: u32,
    started: UnixMillis,
    chunks: BTreeMap<u32, Vec<SnapshotEntry>>,
}

#[derive(Debug)]
struct Shard {
    /// Durable applied seq, as the store last reported it.
    applied: u64,
    /// The target seq of the apply in flight.
    applying: Option<u64>,
    /// Batches ahead of `applied`, by `base_seq`.
    buffer: BTreeMap<u64, DeltaBatch>,
    assemblies: Vec<Assembly>,
    /// The server should be asked for what this shard is missing.
    wanted: bool,
    backoff: Backoff,
    /// No resync request before this time.
    next_request: UnixMillis,
    /// `applied` when the last request went out.
    applied_at_request: u64,
    /// When the shard was last confirmed current, or asked about.
    last_check: UnixMillis,
    /// When the device last sent a freshness request whose proof found this
    /// shard at (or past) the head: the shard is current as of then.
    verified_at: Option<UnixMillis>,
    /// Heads of proofs the shard has not reached yet, with the time their
    /// request was sent: reaching one verifies the shard as of that time.
    pending_proofs: Vec<(u64, UnixMillis)>,
}

impl Shard {
    fn new(applied: u64, config: &DeviceConfig, now: UnixMillis) -> Self {
        Self {
            applied,
            applying: None,
            buffer: BTreeMap::new(),
            assemblies: Vec::new(),
            wanted: true,
            backoff: Backoff::new(config.resync_backoff_min_ms, config.resync_backoff_max_ms),
            next_request: now,
            applied_at_request: applied,
            last_check: now,
            verified_at: None,
            pending_proofs: Vec::new(),
        }
    }

    fn effective(&self) -> u64 {
        self.applying.unwrap_or(self.applied)
    }

    /// The shard reached `seq` durably: proofs it now satisfies verify it.
    fn reached(&mut self, seq: u64) {
        let mut verified = self.verified_at;
        self.pending_proofs.retain(|&(head, requested)| {
            if head <= seq {
                verified = Some(verified.map_or(requested, |v| v.max(requested)));
                false
            } else {
                true
            }
        });
        self.verified_at = verified;
    }
}

#[derive(Debug)]
struct AuditOutbox {
    depth: u64,
    loading: bool,
    /// Last seq of the batch awaiting acknowledgement, and when it was sent.
    in_flight: Option<(u64, UnixMillis)>,
    /// Highest seq ever published this run; acknowledgements are capped to it.
    highest_sent: u64,
    acked: u64,
    retransmit: Backoff,
    wait: u64,
}

/// The device side of sync. See the module documentation.
#[derive(Debug)]
pub struct DeviceSync {
    device: DeviceId,
    keys: TrustedKeys,
    signer: DeviceSigningKey,
    config: DeviceConfig,
    shards: BTreeMap<ShardId, Shard>,
    assignment_version: u64,
    /// The assignment version the status reports: raised only once the
    /// shards it dropped are purged, so the centre never counts a removal
    /// as forgotten by a door that still holds it.
    reported_assignment: u64,
    epoch: u64,
    outbox_epoch: u64,
    freshness: Freshness,
    last_command_id: u64,
    connected: bool,
    wiped: bool,
    audit: AuditOutbox,
    status: StatusInfo,
    status_dirty: bool,
    last_status: Option<UnixMillis>,
    /// Staleness as of the last input (a change makes the status due).
    stale_seen: bool,
}

impl DeviceSync {
    /// `signer` signs every uplink (the device's certificate key); `keys`
    /// are the central keys pinned at provisioning (or since rolled over).
    pub fn new(
        device: DeviceId,
        keys: TrustedKeys,
        signer: DeviceSigningKey,
        config: DeviceConfig,
        state: DeviceState,
        status: StatusInfo,
        now: UnixMillis,
    ) -> Self {
        let shards = state.shards.into_iter().map(|p| (p.shard, Shard::new(p.seq, &config, now))).collect();
        let freshness = Freshness {
            seed: state.nonce_seed,
            counter: 0,
            outstanding: Vec::new(),
            next_request: now,
            last_proof: None,
            purging: Vec::new(),
            purge_in_flight: false,
            purge_retry_at: None,
            unsaved: None,
        };
        let audit = AuditOutbox {
            depth: state.outbox_depth,
            loading: false,
            in_flight: None,
            highest_sent: 0,
            acked: 0,
            retransmit: Backoff::new(config.audit_retransmit_min_ms, config.audit_retransmit_max_ms),
            wait: config.audit_retransmit_min_ms,
        };
        Self {
            device,
            keys,
            signer,
            config,
            shards,
            assignment_version: state.assignment_version,
            reported_assignment: state.assignment_version,
            epoch: state.epoch,
            outbox_epoch: state.outbox_epoch,
            freshness,
            last_command_id: state.last_command_id,
            connected: false,
            wiped: false,
            audit,
            status,
            status_dirty: true,
            last_status: None,
            stale_seen: true,
        }
    }

    /// Topics to subscribe to (QoS 1) on every connect.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.shards.keys().map(topics::shard_delta).collect();
        topics.push(topics::device_down(&self.device));
        topics
    }

    /// The retained "offline" status to register as the MQTT last will.
    pub fn last_will(&self, now: UnixMillis) -> Option<Publish> {
        self.status_publish(false, now)
    }

    /// The shard's applied sequence number, as last reported by the store.
    pub fn applied_seq(&self, shard: &ShardId) -> Option<u64> {
        self.shards.get(shard).map(|s| s.applied)
    }

    /// Whether a [`Command::Wipe`] stopped this machine.
    pub fn is_wiped(&self) -> bool {
        self.wiped
    }

    /// The shards assigned now.
    pub fn shards(&self) -> Vec<ShardId> {
        self.shards.keys().cloned().collect()
    }

    /// The log epoch the device is in (0: not known yet).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The assignment version the device serves.
    pub fn assignment_version(&self) -> u64 {
        self.assignment_version
    }

    /// The moment the door turns stale: `None` when staleness is off
    /// ([`DeviceConfig::max_staleness_ms`] = 0); a time in the past when it
    /// is stale already (never verified since start, a purge pending,
    /// wiped). The door is fresh while `now < fresh_until`.
    pub fn fresh_until(&self) -> Option<UnixMillis> {
        if self.config.max_staleness_ms == 0 {
            return None;
        }
        if self.wiped || self.epoch == 0 || !self.freshness.purging.is_empty() {
            return Some(UnixMillis::MIN);
        }
        let oldest = if self.shards.is_empty() {
            self.freshness.last_proof
        } else {
            self.shards.values().map(|s| s.verified_at).try_fold(UnixMillis::MAX, |oldest, v| v.map(|v| oldest.min(v)))
        };
        Some(oldest.map_or(UnixMillis::MIN, |at| after(at, self.config.max_staleness_ms)))
    }

    /// Whether the door is stale at `now` (see [`DeviceSync::fresh_until`]).
    pub fn is_stale(&self, now: UnixMillis) -> bool {
        self.fresh_until().is_some_and(|until| now >= until)
    }

    /// Whether every shard is confirmed current and nothing is in flight
    /// (no resync wanted, no apply, no audit batch, empty outbox).
    pub fn is_idle(&self) -> bool {
        self.shards.values().all(|s| !s.wanted && s.applying.is_none() && s.assemblies.is_empty())
            && self.audit.depth == 0
            && self.audit.in_flight.is_none()
            && !self.audit.loading
    }

    /// When the shell should next send [`DeviceInput::Tick`].
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        if self.wiped {
            return None;
        }
        let mut deadlines = Vec::new();
        if let Some(until) = self.fresh_until()
            && !self.stale_seen
        {
            // Wake when the door turns stale, so status and metrics say so.
            deadlines.push(until);
        }
        for shard in self.shards.values() {
            for assembly in &shard.assemblies {
                deadlines.push(after(assembly.started, self.config.snapshot_timeout_ms));
            }
            if !self.connected || shard.applying.is_some() {
                continue;
            }
            if shard.wanted {
                deadlines.push(shard.next_request);
            } else {
                deadlines.push(after(shard.last_check, self.config.resync_interval_ms));
            }
        }
        if let Some(at) = self.freshness.purge_retry_at {
            deadlines.push(at);
        }
        if self.connected {
            deadlines.push(self.freshness.next_request);
            if let Some((_, sent)) = self.audit.in_flight {
                deadlines.push(after(sent, self.audit.wait));
            }
            if self.status_dirty
                && let Some(last) = self.last_status
            {
                deadlines.push(after(last, self.config.status_min_interval_ms));
            }
        }
        deadlines.into_iter().min()
    }

    /// Feeds one input; returns what to do, in order.
    pub fn handle(&mut self, now: UnixMillis, input: DeviceInput<'_>) -> Vec<DeviceAction> {
        let mut out = Vec::new();
        match input {
            DeviceInput::Connected => {
                self.connected = true;
                self.last_status = None;
                self.status_dirty = true;
                for shard in self.shards.values_mut() {
                    shard.wanted = true;
                    shard.next_request = now;
                }
                self.freshness.next_request = now;
                self.audit.in_flight = None;
            }
            DeviceInput::Disconnected => {
                self.connected = false;
                self.audit.in_flight = None;
            }
            DeviceInput::Received { topic, payload } => self.received(now, topic, payload, &mut out),
            DeviceInput::Applied { shard, seq } => self.applied(now, &shard, seq, &mut out),
            DeviceInput::ApplyRefused { shard, local_seq } => {
                if let Some(s) = self.shards.get_mut(&shard) {
                    s.applying = None;
                    if local_seq != s.applied {
                        s.applied = local_seq;
                        self.status_dirty = true;
                    }
                    s.wanted = true;
                }
            }
            DeviceInput::ApplyFailed { shard } => {
                if let Some(s) = self.shards.get_mut(&shard) {
                    s.applying = None;
                    s.buffer.clear();
                    s.wanted = true;
                }
            }
            DeviceInput::OutboxChanged { depth } => {
                if depth != self.audit.depth {
                    self.audit.depth = depth;
                    self.status_dirty = true;
                }
            }
            DeviceInput::AuditLoaded { events } => self.audit_loaded(now, events, &mut out),
            DeviceInput::StatusChanged(info) => {
                if info != self.status {
                    self.status = info;
                    self.status_dirty = true;
                }
            }
            DeviceInput::Tick => self.tick(now),
            DeviceInput::Purged { shards } => self.purged(now, &shards, &mut out),
            DeviceInput::PurgeFailed { .. } => {
                // Stay stale (the shards are still in `purging`); try again.
                self.freshness.purge_in_flight = false;
                self.freshness.purge_retry_at = Some(after(now, self.config.resync_backoff_min_ms));
                self.status_dirty = true;
            }
        }
        let stale = self.is_stale(now);
        if stale != self.stale_seen {
            self.stale_seen = stale;
            self.status_dirty = true;
        }
        self.progress(&mut out);
        self.flush(now, &mut out);
        out
    }

    fn received(&mut self, now: UnixMillis, topic: &str, payload: &[u8], out: &mut Vec<DeviceAction>) {
        let result = match topics::parse(topic) {
            Some(Topic::ShardDelta(shard)) => self.on_delta(&shard, payload),
            Some(Topic::DeviceDown(device)) if device == self.device => self.on_down(now, payload, out),
            _ => Err(Rejection::UnexpectedTopic),
        };
        if let Err(reason) = result {
            out.push(DeviceAction::Rejected { topic: topic.chars().take(256).collect(), reason });
        }
    }

    fn on_delta(&mut self, topic_shard: &ShardId, payload: &[u8]) -> Result<(), Rejection> {
        let (batch, _): (DeltaBatch, KeyId) = decode_verified_with_key(payload, &self.keys)?;
        if &batch.shard != topic_shard {
            return Err(Rejection::ShardMismatch { named: batch.shard, topic: topic_shard.clone() });
        }
        self.on_batch(batch)
    }

    fn on_batch(&mut self, batch: DeltaBatch) -> Result<(), Rejection> {
        if self.wiped {
            return Err(Rejection::Wiped);
        }
        self.check_epoch(batch.epoch)?;
        let max_buffered = self.config.max_buffered_batches;
        let shard = self.shards.get_mut(&batch.shard).ok_or_else(|| Rejection::UnassignedShard(batch.shard.clone()))?;
        let effective = shard.effective();
        let (base, seq) = (batch.base_seq, batch.seq);
        let at = |applied| (batch.shard.clone(), base, seq, applied);
        if seq <= effective {
            // Already applied (or being applied): a duplicate or a replay.
            let (shard, base, seq, applied) = at(effective);
            return Err(Rejection::Stale { shard, base, seq, applied });
        }
        if base < effective {
            // Overlaps what is applied: cannot be applied in part.
            shard.wanted = true;
            let (shard, base, seq, applied) = at(effective);
            return Err(Rejection::Overlap { shard, base, seq, applied });
        }
        let gap = (base > effective).then(|| at(effective));
        if gap.is_some() {
            // Keep the batch for when the missing ones arrive, and ask.
            shard.wanted = true;
        }
        shard.buffer.insert(base, batch);
        // Keep the batch at the applied seq and the nearest ones after it.
        let limit = max_buffered + usize::from(shard.buffer.contains_key(&effective));
        while shard.buffer.len() > limit {
            shard.buffer.pop_last();
        }
        match gap {
            Some((shard, base, seq, applied)) => Err(Rejection::Gap { shard, base, seq, applied }),
            None => Ok(()),
        }
    }

    /// Deltas and snapshots are applied only within the device's epoch,
    /// which is known once a proof arrived.
    fn check_epoch(&self, epoch: u64) -> Result<(), Rejection> {
        if self.epoch == 0 || epoch != self.epoch {
            return Err(Rejection::WrongEpoch { found: epoch, expected: self.epoch });
        }
        Ok(())
    }

    fn on_down(&mut self, now: UnixMillis, payload: &[u8], out: &mut Vec<DeviceAction>) -> Result<(), Rejection> {
        let (message, signed_by): (DownMessage, KeyId) = decode_verified_with_key(payload, &self.keys)?;
        if message.device != self.device {
            return Err(Rejection::WrongDevice { named: message.device, expected: self.device.clone() });
        }
        match message.body {
            Down::Deltas(batch) => self.on_batch(batch),
            Down::Snapshot(chunk) => self.on_chunk(now, chunk),
            Down::Head { shard, seq } => self.on_head(now, &shard, seq),
            Down::AuditAck { epoch, up_to_seq } => {
                if epoch != self.outbox_epoch {
                    return Err(Rejection::WrongEpoch { found: epoch, expected: self.outbox_epoch });
                }
                self.on_audit_ack(up_to_seq, out);
                Ok(())
            }
            Down::Command { id, command } => self.on_command(now, id, command, out),
            Down::Freshness(proof) => self.on_proof(now, proof, out),
            Down::Assignment(assignment) => {
                if self.wiped {
                    return Err(Rejection::Wiped);
                }
                if assignment.version <= self.assignment_version {
                    return Err(Rejection::OldAssignment {
                        version: assignment.version,
                        current: self.assignment_version,
                    });
                }
                self.assign(now, assignment, out);
                Ok(())
            }
            Down::KeyRollover { new_key } => self.on_rollover(signed_by, &new_key, out),
        }
    }

    fn on_head(&mut self, now: UnixMillis, shard: &ShardId, seq: u64) -> Result<(), Rejection> {
        if self.wiped {
            return Err(Rejection::Wiped);
        }
        let s = self.shards.get_mut(shard).ok_or_else(|| Rejection::UnassignedShard(shard.clone()))?;
        if seq <= s.effective() {
            // Current: the next sign of a gap may be asked about at once.
            s.wanted = false;
            s.backoff.reset();
            s.next_request = now;
            s.last_check = now;
        } else {
            s.wanted = true;
            // A partial answer that made progress: ask for the rest at once.
            if s.applied > s.applied_at_request || s.applying.is_some() {
                s.next_request = s.next_request.min(now);
            }
        }
        Ok(())
    }

    fn on_chunk(&mut self, now: UnixMillis, chunk: SnapshotChunk) -> Result<(), Rejection> {
        if self.wiped {
            return Err(Rejection::Wiped);
        }
        self.check_epoch(chunk.epoch)?;
        let max = self.config.max_snapshot_assemblies.max(1);
        let s = self.shards.get_mut(&chunk.shard).ok_or_else(|| Rejection::UnassignedShard(chunk.shard.clone()))?;
        if chunk.seq <= s.effective() {
            return Ok(());
        }
        let position = s.assemblies.iter().position(|a| a.snapshot == chunk.snapshot && a.seq == chunk.seq);
        let assembly = match position {
            Some(i) => &mut s.assemblies[i],
            None => {
                if s.assemblies.len() >= max {
                    // Drop the oldest started.
                    if let Some(oldest) = s.assemblies.iter().enumerate().min_by_key(|(_, a)| a.started).map(|(i, _)| i)
                    {
                        s.assemblies.remove(oldest);
                    }
                }
                s.assemblies.push(Assembly {
                    snapshot: chunk.snapshot,
                    seq: chunk.seq,
                    count: chunk.count,
                    started: now,
                    chunks: BTreeMap::new(),
                });
                let last = s.assemblies.len() - 1;
                &mut s.assemblies[last]
            }
        };
        if assembly.count != chunk.count {
            return Err(Rejection::InconsistentSnapshot);
        }
        assembly.chunks.insert(chunk.index, chunk.entries);
        Ok(())
    }

    fn on_command(
        &mut self,
        now: UnixMillis,
        id: u64,
        command: Command,
        out: &mut Vec<DeviceAction>,
    ) -> Result<(), Rejection> {
        if id <= self.last_command_id {
            return Err(Rejection::ReplayedCommand { id, last: self.last_command_id });
        }
        self.last_command_id = id;
        self.status_dirty = true;
        match command {
            Command::Resync => {
                for s in self.shards.values_mut() {
                    s.wanted = true;
                    s.backoff.reset();
                    s.next_request = now;
                }
            }
            Command::Wipe => {
                self.wiped = true;
                for s in self.shards.values_mut() {
                    s.applied = 0;
                    s.applying = None;
                    s.buffer.clear();
                    s.assemblies.clear();
                    s.wanted = false;
                }
                self.status_dirty = true;
            }
            Command::RotateKey => {}
        }
        let wipe = command == Command::Wipe;
        out.push(DeviceAction::Execute { id, command });
        if wipe {
            // The last word of a wiped device, whatever the status rate
            // limit: offline, "wiped", and the command taken.
            if let Some(status) = self.status_publish(false, now) {
                out.push(DeviceAction::Publish(status));
                self.status_dirty = false;
            }
        }
        Ok(())
    }

    fn applied(&mut self, now: UnixMillis, shard: &ShardId, seq: u64, out: &mut Vec<DeviceAction>) {
        if self.freshness.purging.contains(shard) {
            // An apply of the epoch or assignment being forgotten.
            return;
        }
        let Some(s) = self.shards.get_mut(shard) else { return };
        s.applying = None;
        if self.wiped {
            return;
        }
        if seq > s.applied {
            s.applied = seq;
            s.backoff.reset();
            s.reached(seq);
            self.status_dirty = true;
            if self.connected {
                let body = Up::Applied { shard: shard.clone(), seq };
                if let Some(publish) = self.up(now, body) {
                    out.push(DeviceAction::Publish(publish));
                }
            }
        }
    }

    /// A signed uplink on the device's `up` topic.
    pub(super) fn up(&self, now: UnixMillis, body: Up) -> Option<Publish> {
        let message = UpMessage { device: self.device.clone(), sent_at: now, body };
        self.sign(&message).map(|payload| Publish { topic: topics::device_up(&self.device), payload, retain: false })
    }

    pub(super) fn sign<M: Message>(&self, message: &M) -> Option<Vec<u8>> {
        encode_device_signed(message, &self.signer).ok()
    }

    fn tick(&mut self, now: UnixMillis) {
        let timeout = self.config.snapshot_timeout_ms;
        let interval = self.config.resync_interval_ms;
        for s in self.shards.values_mut() {
            let before = s.assemblies.len();
            s.assemblies.retain(|a| now < after(a.started, timeout));
            if s.assemblies.len() != before {
                s.wanted = true;
            }
            if !s.wanted && now >= after(s.last_check, interval) {
                s.wanted = true;
            }
        }
        if let Some((_, sent)) = self.audit.in_flight
            && now >= after(sent, self.audit.wait)
        {
            // No acknowledgement in time: send the (new) oldest prefix again.
            self.audit.in_flight = None;
        }
        if self.freshness.purge_retry_at.is_some_and(|at| now >= at) {
            self.freshness.purge_retry_at = None;
        }
        // Answers to requests older than the staleness window verify nothing
        // useful any more.
        let keep = self.config.max_staleness_ms.max(self.config.freshness_interval_ms.saturating_mul(4));
        self.freshness.outstanding.retain(|o| now < after(o.sent, keep));
    }

    /// Issues the next apply of every shard that has none in flight.
    fn progress(&mut self, out: &mut Vec<DeviceAction>) {
        if self.wiped {
            return;
        }
        if self.freshness.purge_retry_at.is_none() {
            self.start_purge(out);
        }
        for (id, s) in &mut self.shards {
            if s.applying.is_some() {
                continue;
            }
            let applied = s.applied;
            s.buffer.retain(|_, b| b.seq > applied);
            s.assemblies.retain(|a| a.seq > applied);
            // A complete snapshot beats deltas: it is never behind them here.
            let complete = s
                .assemblies
                .iter()
                .enumerate()
                .filter(|(_, a)| a.chunks.len() == a.count as usize)
                .max_by_key(|(_, a)| a.seq)
                .map(|(i, _)| i);
            if let Some(i) = complete {
                let assembly = s.assemblies.remove(i);
                s.assemblies.retain(|a| a.seq > assembly.seq);
                s.applying = Some(assembly.seq);
                let entries = assembly.chunks.into_values().flatten().collect();
                out.push(DeviceAction::ApplySnapshot { shard: id.clone(), seq: assembly.seq, entries });
                continue;
            }
            if let Some(batch) = s.buffer.remove(&applied) {
                s.applying = Some(batch.seq);
                out.push(DeviceAction::ApplyDelta(batch));
            }
        }
    }

    /// Publishes what is due: resync requests, audit, status.
    fn flush(&mut self, now: UnixMillis, out: &mut Vec<DeviceAction>) {
        if !self.connected || self.wiped {
            if self.connected && self.wiped {
                self.flush_status(now, out);
            }
            return;
        }
        if now >= self.freshness.next_request {
            let nonce = self.freshness.nonce();
            if let Some(publish) = self.up(now, Up::FreshnessRequest { nonce }) {
                out.push(DeviceAction::Publish(publish));
                let applied = self.shards.iter().map(|(id, s)| (id.clone(), s.applied)).collect();
                self.freshness.outstanding.push(Outstanding { nonce, sent: now, applied });
                if self.freshness.outstanding.len() > MAX_OUTSTANDING_NONCES {
                    self.freshness.outstanding.remove(0);
                }
            }
            self.freshness.next_request = after(now, self.config.freshness_interval_ms.max(1));
        }
        // Resync requests wait for the epoch (the first proof).
        let ids: Vec<ShardId> = if self.epoch == 0 {
            Vec::new()
        } else {
            self.shards
                .iter()
                .filter(|(_, s)| s.wanted && s.applying.is_none() && now >= s.next_request)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in ids {
            let Some(have_seq) = self.shards.get(&id).map(|s| s.applied) else { continue };
            if let Some(publish) = self.up(now, Up::ResyncRequest { shard: id.clone(), have_seq }) {
                out.push(DeviceAction::Publish(publish));
            }
            if let Some(s) = self.shards.get_mut(&id) {
                s.next_request = after(now, s.backoff.next_delay());
                s.applied_at_request = s.applied;
                s.last_check = now;
            }
        }
        if self.audit.in_flight.is_none() && !self.audit.loading && self.audit.depth > 0 {
            self.audit.loading = true;
            out.push(DeviceAction::LoadAudit {
                limit: self.config.audit_batch_events.clamp(1, MAX_AUDIT_BATCH_EVENTS),
            });
        }
        self.flush_status(now, out);
    }

    fn flush_status(&mut self, now: UnixMillis, out: &mut Vec<DeviceAction>) {
        let due = match self.last_status {
            None => true,
            Some(last) => self.status_dirty && now >= after(last, self.config.status_min_interval_ms),
        };
        if !due {
            return;
        }
        if let Some(publish) = self.status_publish(true, now) {
            out.push(DeviceAction::Publish(publish));
            self.last_status = Some(now);
            self.status_dirty = false;
        }
    }

    fn status_publish(&self, online: bool, now: UnixMillis) -> Option<Publish> {
        let status = DeviceStatus {
            device: self.device.clone(),
            online,
            at: now,
            shards: self
                .shards
                .iter()
                .map(|(shard, s)| ShardProgress { shard: shard.clone(), seq: s.applied })
                .collect(),
            model_id: self.status.model_id.clone(),
            version: self.status.version.clone(),
            health: if self.wiped { "wiped".into() } else { self.status.health.clone() },
            outbox_depth: self.audit.depth,
            last_command: self.last_command_id,
            stale: self.is_stale(now),
            assignment: self.reported_assignment,
            trusted_key: self.keys.keys().first().map(|k| k.key_id().to_string()),
        };
        self.sign(&status).map(|payload| Publish { topic: topics::device_status(&self.device), payload, retain: true })
    }
}

mod audit;
mod freshness;
#[cfg(test)]
mod tests;
