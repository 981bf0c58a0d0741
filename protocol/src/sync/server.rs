//! The central server's side of sync: a pure state machine.
//!
//! The shell (the sync server's MQTT client, one per replica; device uplink
//! traffic arrives through a shared subscription) feeds it
//! [`ServerInput`]s and carries out the [`ServerAction`]s, in order:
//!
//! | action | the shell… | and then reports |
//! | --- | --- | --- |
//! | [`ServerAction::Publish`] | publishes with QoS 1 | — |
//! | [`ServerAction::ReadLog`] | reads the shard's log entries after `after_seq` (its own page limit) and the head | [`ServerInput::LogRead`] with [`LogRead::Entries`] or [`LogRead::Compacted`] |
//! | [`ServerAction::ReadSnapshot`] | reads the shard's state and the seq it corresponds to, consistently | [`ServerInput::LogRead`] with [`LogRead::Snapshot`] |
//! | [`ServerAction::StoreAudit`] | inserts the events idempotently (unique `(device, seq)`; a duplicate counts as stored) | [`ServerInput::AuditStored`] or [`ServerInput::AuditStoreFailed`] |
//! | [`ServerAction::RecordApplied`] | raises the device's applied seq for the shard (`$max`) | — |
//! | [`ServerAction::RecordStatus`] | stores the device's status | — |
//! | [`ServerAction::ReadFreshness`] | reads the epoch, the device's assignment and its shards' heads | [`ServerInput::FreshnessRead`] |
//! | [`ServerAction::Rejected`] | logs and counts it | — |
//!
//! Every uplink is signed by its device: the shell looks the device up by
//! the topic's device id (refusing unknown and revoked devices) and hands
//! the machine the device's public key, which verifies the message before
//! anything in it is believed. The shell must also answer resync reads only
//! for shards assigned to the device now, and cap reported seqs at the head.
//!
//! The machine keeps no state that matters across replicas: every answer is
//! computed from what the shell read from the database. See [`crate::sync`]
//! for the invariants.

use std::collections::{BTreeMap, HashMap};

use crate::codec::{Kind, ProtocolError, decode_device_verified, encode_signed};
use crate::ids::{DeviceId, ShardId};
use crate::messages::{
    Assignment, AuditBatch, AuditEvent, Command, DeltaBatch, DeltaOp, DeviceStatus, Down, DownMessage, FreshnessProof,
    MAX_DELTA_OPS, MAX_SNAPSHOT_CHUNK_ENTRIES, ShardProgress, SnapshotChunk, SnapshotEntry, UnixMillis, Up, UpMessage,
};
use crate::signing::{DevicePublicKey, SigningKey};
use crate::sync::{Publish, Rejection, after};
use crate::topics::{self, Topic};

/// Bounds of the server machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest down message produced, in bytes (at most the `down` kind's
    /// limit; lower it to the broker's maximum packet size).
    pub max_message_bytes: usize,
    /// A resync request for a (device, shard) whose read is still in flight
    /// is ignored, unless the read is older than this.
    pub read_timeout_ms: u64,
    /// Resync and freshness requests one device may make per
    /// `rate_window_ms`; more are refused and counted.
    pub max_requests_per_window: u32,
    pub rate_window_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 256 * 1024,
            read_timeout_ms: 30_000,
            max_requests_per_window: 600,
            rate_window_ms: 10_000,
        }
    }
}

/// One entry of a shard's delta log: the change that brought it to `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub seq: u64,
    pub op: DeltaOp,
}

impl LogEntry {
    /// The entries of a batch with one op per sequence number (as the
    /// server's log reads produce); `None` if the batch is not of that form.
    pub fn from_batch(batch: DeltaBatch) -> Option<Vec<LogEntry>> {
        let span = batch.seq.checked_sub(batch.base_seq)?;
        if span != batch.ops.len() as u64 {
            return None;
        }
        Some((batch.base_seq + 1..).zip(batch.ops).map(|(seq, op)| LogEntry { seq, op }).collect())
    }
}

/// What the shell read for a resync.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRead {
    /// Entries after the requested seq, oldest first (possibly a page of
    /// them, possibly none), and the log's head, in `epoch`.
    Entries { epoch: u64, head: u64, entries: Vec<LogEntry> },
    /// The log no longer reaches back to the requested seq (compacted).
    Compacted { head: u64 },
    /// The shard's complete state at `seq`, in `epoch`.
    Snapshot { epoch: u64, seq: u64, entries: Vec<SnapshotEntry> },
    /// The shard is not assigned to the device now: nothing is sent.
    Unassigned,
    /// The read failed; the device will ask again.
    Failed,
}

/// What the shell read for a freshness proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreshnessRead {
    pub epoch: u64,
    pub assignment: Assignment,
    /// The head of every assigned shard.
    pub heads: Vec<ShardProgress>,
}

/// Something that happened, for [`ServerSync::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum ServerInput<'a> {
    /// A publication arrived on `topic` (a device's `up` or `status`), from
    /// the device whose key is `key` (the shell looked it up by the topic's
    /// device id; unknown and revoked devices never get here).
    Received { topic: &'a str, payload: &'a [u8], key: &'a DevicePublicKey },
    /// The answer to [`ServerAction::ReadLog`] or [`ServerAction::ReadSnapshot`].
    LogRead { device: DeviceId, shard: ShardId, after_seq: u64, read: LogRead },
    /// The answer to [`ServerAction::ReadFreshness`] (`None`: the read failed).
    FreshnessRead { device: DeviceId, nonce: u64, read: Option<FreshnessRead> },
    /// Every event of the [`ServerAction::StoreAudit`] is stored (or was already).
    AuditStored { device: DeviceId, epoch: u64, up_to_seq: u64 },
    /// Storing failed; the device will retransmit.
    AuditStoreFailed { device: DeviceId, up_to_seq: u64 },
}

/// Something for the shell to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerAction {
    Publish(Publish),
    /// Read `shard`'s log after `after_seq`, then report [`ServerInput::LogRead`].
    ReadLog {
        device: DeviceId,
        shard: ShardId,
        after_seq: u64,
    },
    /// Read `shard`'s state, then report [`ServerInput::LogRead`].
    ReadSnapshot {
        device: DeviceId,
        shard: ShardId,
        after_seq: u64,
    },
    /// Store the events idempotently; report [`ServerInput::AuditStored`] with
    /// the same `epoch` and `up_to_seq` only once they are durable.
    StoreAudit {
        device: DeviceId,
        epoch: u64,
        events: Vec<AuditEvent>,
        up_to_seq: u64,
    },
    /// Read the epoch, the device's assignment and the heads of its shards,
    /// then report [`ServerInput::FreshnessRead`].
    ReadFreshness {
        device: DeviceId,
        nonce: u64,
    },
    /// `device` has applied `shard` up to `seq` (raise, never lower).
    RecordApplied {
        device: DeviceId,
        shard: ShardId,
        seq: u64,
    },
    RecordStatus(DeviceStatus),
    /// A message was refused; log and count it.
    Rejected {
        topic: String,
        reason: Rejection,
    },
    /// A device claims a seq beyond the log's head (the database was
    /// restored from an older backup?): an operator must look.
    DeviceAhead {
        device: DeviceId,
        shard: ShardId,
        device_seq: u64,
        head: u64,
    },
}

/// The server side of sync. See the module documentation.
#[derive(Debug)]
pub struct ServerSync {
    key: SigningKey,
    config: ServerConfig,
    /// Snapshot ids are `nonce + counter`: distinct across replicas that
    /// were given distinct random nonces.
    nonce: u64,
    counter: u64,
    /// Reads in flight, by device and shard, with their start time.
    reads: HashMap<(DeviceId, ShardId), UnixMillis>,
    /// Highest applied seq seen per device and shard (this replica only).
    applied: HashMap<DeviceId, BTreeMap<ShardId, u64>>,
    /// Requests per device in the current rate window: window start, count.
    requests: HashMap<DeviceId, (UnixMillis, u32)>,
}

/// Fixed bytes of a down message around its payload (envelope, signature,
/// device, timestamps, snapshot header); generous.
const DOWN_OVERHEAD: usize = 512;

impl ServerSync {
    /// `nonce` should be random per process (snapshot ids).
    pub fn new(key: SigningKey, config: ServerConfig, nonce: u64) -> Self {
        Self {
            key,
            config,
            nonce,
            counter: 0,
            reads: HashMap::new(),
            applied: HashMap::new(),
            requests: HashMap::new(),
        }
    }

    /// A signed assignment for one device (pushed when its groups change).
    pub fn assignment(
        &self,
        now: UnixMillis,
        device: &DeviceId,
        assignment: Assignment,
    ) -> Result<Publish, ProtocolError> {
        self.down(now, device, Down::Assignment(assignment))
    }

    /// The rollover to this machine's key for a device that still trusts
    /// `previous`: signed by `previous`, naming the current key.
    pub fn rollover(
        &self,
        now: UnixMillis,
        device: &DeviceId,
        previous: &SigningKey,
    ) -> Result<Publish, ProtocolError> {
        let message = DownMessage {
            device: device.clone(),
            sent_at: now,
            body: Down::KeyRollover { new_key: self.key.public_key().as_bytes().to_vec() },
        };
        Ok(Publish { topic: topics::device_down(device), payload: encode_signed(&message, previous)?, retain: false })
    }

    /// Counts a request of `device`; whether it is within its rate.
    fn admit(&mut self, now: UnixMillis, device: &DeviceId) -> bool {
        let window = self.config.rate_window_ms;
        let (start, count) = self.requests.entry(device.clone()).or_insert((now, 0));
        if now >= after(*start, window) || now < *start {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
        *count <= self.config.max_requests_per_window
    }

    /// The shared subscription for device uplinks and the status topics.
    pub fn subscriptions(group: &str) -> Vec<String> {
        vec![topics::shared_up(group), topics::ALL_STATUS.to_string()]
    }

    /// The signed publication of a new delta batch to every device of its shard.
    pub fn publish_delta(&self, batch: &DeltaBatch) -> Result<Publish, ProtocolError> {
        Ok(Publish {
            topic: topics::shard_delta(&batch.shard),
            payload: encode_signed(batch, &self.key)?,
            retain: false,
        })
    }

    /// A signed command for one device; `id` must exceed every earlier
    /// command id of that device (take it from a database counter).
    pub fn command(
        &self,
        now: UnixMillis,
        device: &DeviceId,
        id: u64,
        command: Command,
    ) -> Result<Publish, ProtocolError> {
        self.down(now, device, Down::Command { id, command })
    }

    /// The highest applied seq this replica has seen from `device` for `shard`.
    pub fn applied_seq(&self, device: &DeviceId, shard: &ShardId) -> Option<u64> {
        self.applied.get(device).and_then(|shards| shards.get(shard)).copied()
    }

    /// Feeds one input; returns what to do, in order.
    pub fn handle(&mut self, now: UnixMillis, input: ServerInput<'_>) -> Vec<ServerAction> {
        let mut out = Vec::new();
        match input {
            ServerInput::Received { topic, payload, key } => {
                if let Err(reason) = self.received(now, topic, payload, key, &mut out) {
                    out.push(ServerAction::Rejected { topic: topic.chars().take(256).collect(), reason });
                }
            }
            ServerInput::LogRead { device, shard, after_seq, read } => {
                self.log_read(now, device, shard, after_seq, read, &mut out)
            }
            ServerInput::FreshnessRead { device, nonce, read } => {
                if let Some(FreshnessRead { epoch, assignment, heads }) = read {
                    let proof = FreshnessProof { nonce, epoch, assignment, heads };
                    if let Ok(publish) = self.down(now, &device, Down::Freshness(proof)) {
                        out.push(ServerAction::Publish(publish));
                    }
                }
            }
            ServerInput::AuditStored { device, epoch, up_to_seq } => {
                if let Ok(publish) = self.down(now, &device, Down::AuditAck { epoch, up_to_seq }) {
                    out.push(ServerAction::Publish(publish));
                }
            }
            ServerInput::AuditStoreFailed { .. } => {}
        }
        out
    }

    fn received(
        &mut self,
        now: UnixMillis,
        topic: &str,
        payload: &[u8],
        key: &DevicePublicKey,
        out: &mut Vec<ServerAction>,
    ) -> Result<(), Rejection> {
        match topics::parse(topic) {
            Some(Topic::DeviceUp(device)) => {
                let message: UpMessage = decode_device_verified(payload, key)?;
                if message.device != device {
                    return Err(Rejection::WrongDevice { named: message.device, expected: device });
                }
                self.on_up(now, device, message.body, out)
            }
            Some(Topic::DeviceStatus(device)) => {
                let status: DeviceStatus = decode_device_verified(payload, key)?;
                if status.device != device {
                    return Err(Rejection::WrongDevice { named: status.device, expected: device });
                }
                for progress in &status.shards {
                    self.record_applied(&device, &progress.shard, progress.seq, out);
                }
                out.push(ServerAction::RecordStatus(status));
                Ok(())
            }
            _ => Err(Rejection::UnexpectedTopic),
        }
    }

    fn on_up(
        &mut self,
        now: UnixMillis,
        device: DeviceId,
        body: Up,
        out: &mut Vec<ServerAction>,
    ) -> Result<(), Rejection> {
        match body {
            Up::ResyncRequest { shard, have_seq } => {
                if !self.admit(now, &device) {
                    return Err(Rejection::RateLimited(device));
                }
                let key = (device, shard);
                if let Some(&started) = self.reads.get(&key)
                    && now < after(started, self.config.read_timeout_ms)
                {
                    return Ok(());
                }
                self.reads.insert(key.clone(), now);
                let (device, shard) = key;
                self.record_applied(&device, &shard, have_seq, out);
                out.push(ServerAction::ReadLog { device, shard, after_seq: have_seq });
            }
            Up::Audit(AuditBatch { events }) => {
                let up_to_seq = events.last().map_or(0, |e| e.seq);
                let epoch = events.first().map_or(0, |e| e.epoch);
                out.push(ServerAction::StoreAudit { device, epoch, events, up_to_seq });
            }
            Up::Applied { shard, seq } => self.record_applied(&device, &shard, seq, out),
            Up::FreshnessRequest { nonce } => {
                if !self.admit(now, &device) {
                    return Err(Rejection::RateLimited(device));
                }
                out.push(ServerAction::ReadFreshness { device, nonce });
            }
        }
        Ok(())
    }

    fn record_applied(&mut self, device: &DeviceId, shard: &ShardId, seq: u64, out: &mut Vec<ServerAction>) {
        let shards = self.applied.entry(device.clone()).or_default();
        // Any change is passed on (the store keeps the maximum within an
        // epoch): remembering only the highest would swallow a true, lower
        // acknowledgement after a new epoch reset the recorded seqs.
        if shards.get(shard).is_none_or(|&known| seq != known) {
            shards.insert(shard.clone(), seq);
            out.push(ServerAction::RecordApplied { device: device.clone(), shard: shard.clone(), seq });
        }
    }

    fn log_read(
        &mut self,
        now: UnixMillis,
        device: DeviceId,
        shard: ShardId,
        after_seq: u64,
        read: LogRead,
        out: &mut Vec<ServerAction>,
    ) {
        let key = (device, shard);
        match read {
            LogRead::Failed => {
                self.reads.remove(&key);
            }
            LogRead::Unassigned => {
                self.reads.remove(&key);
                let (device, shard) = key;
                // Recorded applied seqs of a shard it does not serve are
                // forgotten, so they never count for erasure.
                if let Some(shards) = self.applied.get_mut(&device) {
                    shards.remove(&shard);
                }
                out.push(ServerAction::Rejected {
                    topic: topics::device_up(&device),
                    reason: Rejection::UnassignedShard(shard),
                });
            }
            LogRead::Compacted { .. } => {
                // The read stays in flight until the snapshot is answered.
                self.reads.insert(key.clone(), now);
                let (device, shard) = key;
                out.push(ServerAction::ReadSnapshot { device, shard, after_seq });
            }
            LogRead::Entries { epoch, head, entries } => {
                if head < after_seq {
                    self.reads.remove(&key);
                    let (device, shard) = key;
                    out.push(ServerAction::DeviceAhead { device, shard, device_seq: after_seq, head });
                    return;
                }
                let mut expected = after_seq + 1;
                let contiguous: Vec<LogEntry> = entries
                    .into_iter()
                    .take_while(|e| {
                        let ok = e.seq == expected;
                        expected += 1;
                        ok
                    })
                    .collect();
                if contiguous.is_empty() && head > after_seq {
                    // The log has moved on but does not start right after
                    // the device: compacted, whatever the shell called it.
                    self.reads.insert(key.clone(), now);
                    let (device, shard) = key;
                    out.push(ServerAction::ReadSnapshot { device, shard, after_seq });
                    return;
                }
                self.reads.remove(&key);
                let (device, shard) = key;
                let last = contiguous.last().map_or(after_seq, |e| e.seq);
                for batch in self.batches(&shard, epoch, after_seq, contiguous) {
                    if let Ok(publish) = self.down(now, &device, Down::Deltas(batch)) {
                        out.push(ServerAction::Publish(publish));
                    }
                }
                // The head tells the device whether it is now current; a
                // hole in what was read shows as a head beyond the last batch.
                let head = if last < head { head } else { last };
                if let Ok(publish) = self.down(now, &device, Down::Head { shard, seq: head }) {
                    out.push(ServerAction::Publish(publish));
                }
            }
            LogRead::Snapshot { epoch, seq, entries } => {
                self.reads.remove(&key);
                let (device, shard) = key;
                if seq <= after_seq {
                    // Nothing the device lacks (it is at or beyond this state).
                    if seq < after_seq {
                        out.push(ServerAction::DeviceAhead {
                            device: device.clone(),
                            shard: shard.clone(),
                            device_seq: after_seq,
                            head: seq,
                        });
                    }
                } else {
                    self.counter += 1;
                    let snapshot = self.nonce.wrapping_add(self.counter);
                    for chunk in self.chunks(&shard, epoch, seq, snapshot, entries) {
                        if let Ok(publish) = self.down(now, &device, Down::Snapshot(chunk)) {
                            out.push(ServerAction::Publish(publish));
                        }
                    }
                }
                if let Ok(publish) = self.down(now, &device, Down::Head { shard, seq }) {
                    out.push(ServerAction::Publish(publish));
                }
            }
        }
    }

    fn budget(&self) -> usize {
        self.config.max_message_bytes.min(Kind::Down.max_bytes()).saturating_sub(DOWN_OVERHEAD).max(1)
    }

    /// Consecutive entries as batches that each fit one down message.
    fn batches(&self, shard: &ShardId, epoch: u64, after_seq: u64, entries: Vec<LogEntry>) -> Vec<DeltaBatch> {
        let budget = self.budget();
        let mut batches = Vec::new();
        let mut current =
            DeltaBatch { shard: shard.clone(), epoch, base_seq: after_seq, seq: after_seq, ops: Vec::new() };
        let mut size = 0;
        for entry in entries {
            let entry_size = cbor_len(&entry.op);
            if !current.ops.is_empty() && (size + entry_size > budget || current.ops.len() >= MAX_DELTA_OPS) {
                let next = DeltaBatch {
                    shard: shard.clone(),
                    epoch,
                    base_seq: current.seq,
                    seq: current.seq,
                    ops: Vec::new(),
                };
                batches.push(std::mem::replace(&mut current, next));
                size = 0;
            }
            size += entry_size;
            current.seq = entry.seq;
            current.ops.push(entry.op);
        }
        if !current.ops.is_empty() {
            batches.push(current);
        }
        batches
    }

    /// A snapshot as chunks that each fit one down message.
    fn chunks(
        &self,
        shard: &ShardId,
        epoch: u64,
        seq: u64,
        snapshot: u64,
        entries: Vec<SnapshotEntry>,
    ) -> Vec<SnapshotChunk> {
        let budget = self.budget();
        let mut groups: Vec<Vec<SnapshotEntry>> = vec![Vec::new()];
        let mut size = 0;
        for entry in entries {
            let entry_size = cbor_len(&entry);
            if let Some(group) = groups.last()
                && !group.is_empty()
                && (size + entry_size > budget || group.len() >= MAX_SNAPSHOT_CHUNK_ENTRIES)
            {
                groups.push(Vec::new());
                size = 0;
            }
            size += entry_size;
            if let Some(group) = groups.last_mut() {
                group.push(entry);
            }
        }
        // Beyond MAX_SNAPSHOT_CHUNKS the chunks fail validation when encoded:
        // the device then gets no snapshot rather than a partial one.
        let count = u32::try_from(groups.len()).unwrap_or(u32::MAX);
        groups
            .into_iter()
            .enumerate()
            .map(|(index, entries)| SnapshotChunk {
                shard: shard.clone(),
                epoch,
                seq,
                snapshot,
                index: index as u32,
                count,
                entries,
            })
            .collect()
    }

    fn down(&self, now: UnixMillis, device: &DeviceId, body: Down) -> Result<Publish, ProtocolError> {
        let message = DownMessage { device: device.clone(), sent_at: now, body };
        Ok(Publish { topic: topics::device_down(device), payload: encode_signed(&message, &self.key)?, retain: false })
    }
}

/// Encoded size of `value` in CBOR.
fn cbor_len<T: serde::Serialize>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0 += data.len();
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match ciborium::into_writer(value, &mut counter) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX / 4,
    }
}

#[cfg(test)]
mod tests;
