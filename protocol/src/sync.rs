//! The sync state machines (DESIGN.md §5): pure cores that take inputs and
//! `now` and return actions; the async shells around them do the MQTT and
//! storage I/O and report results back as further inputs. Neither machine
//! reads a clock, touches a socket or blocks.
//!
//! - [`device::DeviceSync`] runs on a kiosk: applies signed deltas strictly in
//!   sequence, asks for a resync on a gap, assembles snapshots, delivers the
//!   audit outbox until acknowledged, executes commands, publishes status.
//! - [`server::ServerSync`] runs in the central server: answers resync
//!   requests from what the shell read from the delta log, stores audit
//!   batches and acknowledges them only once stored, tracks which devices
//!   have applied which sequence number.
//!
//! # Invariants
//!
//! Both are tested without a broker, including a property test that drops,
//! duplicates and reorders every message between a device and a server
//! (`protocol/tests/sync_convergence.rs`).
//!
//! - **Nothing applied out of order.** A device asks its store to apply a
//!   batch only when the batch's `base_seq` is the shard's applied sequence
//!   number, and a snapshot only when its `seq` is above it; one apply per
//!   shard is in flight at a time. The shard therefore only ever moves forward
//!   through states the central log went through. Replayed, duplicated or
//!   reordered messages cannot move it back: their sequence numbers are signed.
//! - **Nothing lost.** A gap, a lost answer, a partial answer or a stalled
//!   snapshot leads to another resync request (with backoff), and every
//!   shard is re-checked periodically and on every connect, so a device
//!   converges on the log's head once messages flow. Audit events stay in the
//!   device's outbox until an acknowledgement covering them arrives and are
//!   retransmitted after a timeout.
//! - **Nothing duplicated.** Audit events are identified by `(device, seq)`;
//!   the server stores them idempotently and acknowledges only what is
//!   stored; a device only ever sends a prefix of its outbox (oldest pending
//!   events first), so a cumulative `AuditAck { up_to_seq }` never covers an
//!   event that was not stored.

pub mod device;
pub mod server;

use crate::codec::ProtocolError;
use crate::ids::{DeviceId, ShardId};

/// One MQTT publication (always QoS 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Retained by the broker (the device status).
    pub retain: bool,
}

/// Why a received message was not acted on. Each one should be logged and
/// counted (label: [`Rejection::label`]). None of them changes applied
/// state; a delta after a gap ([`Rejection::Gap`]) is held back until the
/// deltas before it arrive, and a resync is asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("not a facegate topic this side subscribes to")]
    UnexpectedTopic,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("message names device {named}, but arrived for {expected}")]
    WrongDevice { named: DeviceId, expected: DeviceId },
    #[error("delta for shard {named} arrived on the topic of shard {topic}")]
    ShardMismatch { named: ShardId, topic: ShardId },
    #[error("shard {0} is not assigned to this device")]
    UnassignedShard(ShardId),
    #[error("command {id} is not after the last command executed ({last})")]
    ReplayedCommand { id: u64, last: u64 },
    #[error("snapshot chunk disagrees with earlier chunks of the same snapshot")]
    InconsistentSnapshot,
    #[error("the device is wiped and no longer syncs")]
    Wiped,
    /// A duplicate (QoS 1 redelivery, a resync answer racing a live delta)
    /// or a replay of a delta already applied.
    #[error("delta {base}..{seq} of shard {shard} is not after the applied seq {applied}: a duplicate or a replay")]
    Stale { shard: ShardId, base: u64, seq: u64, applied: u64 },
    #[error("delta {base}..{seq} of shard {shard} overlaps the applied seq {applied} and cannot be applied in part")]
    Overlap { shard: ShardId, base: u64, seq: u64, applied: u64 },
    #[error("delta {base}..{seq} of shard {shard} is after a gap (applied {applied}): held back, resync asked for")]
    Gap { shard: ShardId, base: u64, seq: u64, applied: u64 },
    #[error("message of epoch {found}, but this side is in epoch {expected}")]
    WrongEpoch { found: u64, expected: u64 },
    #[error("assignment version {version} is not after the current {current}")]
    OldAssignment { version: u64, current: u64 },
    #[error("freshness proof for a nonce this device did not ask with (a replay, or too late)")]
    UnknownNonce,
    #[error(
        "shard {shard} is applied up to {applied}, beyond the log's head {head}: the log went back without a new epoch"
    )]
    AheadOfLog { shard: ShardId, applied: u64, head: u64 },
    #[error("device {0} is unknown or revoked")]
    UnknownDevice(DeviceId),
    #[error("device {0} asks too often")]
    RateLimited(DeviceId),
}

impl Rejection {
    /// A short, low-cardinality name for a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnexpectedTopic => "unexpected_topic",
            Self::Protocol(error) => match error {
                ProtocolError::TooLarge { .. } => "too_large",
                ProtocolError::Malformed { .. } => "malformed",
                ProtocolError::Version { .. } => "version",
                ProtocolError::UnknownKind { .. } | ProtocolError::WrongKind { .. } => "wrong_kind",
                ProtocolError::Unsigned { .. } | ProtocolError::WrongSigner { .. } => "unsigned",
                ProtocolError::UnknownKey { .. } => "unknown_key",
                ProtocolError::BadSignature { .. } => "bad_signature",
                ProtocolError::Invalid { .. } => "invalid",
                ProtocolError::Encode { .. } => "encode",
            },
            Self::WrongDevice { .. } => "wrong_device",
            Self::ShardMismatch { .. } => "shard_mismatch",
            Self::UnassignedShard(_) => "unassigned_shard",
            Self::ReplayedCommand { .. } => "replayed_command",
            Self::InconsistentSnapshot => "inconsistent_snapshot",
            Self::Wiped => "wiped",
            Self::Stale { .. } => "stale",
            Self::Overlap { .. } => "overlap",
            Self::Gap { .. } => "gap",
            Self::WrongEpoch { .. } => "wrong_epoch",
            Self::OldAssignment { .. } => "old_assignment",
            Self::UnknownNonce => "unknown_nonce",
            Self::AheadOfLog { .. } => "ahead_of_log",
            Self::UnknownDevice(_) => "unknown_device",
            Self::RateLimited(_) => "rate_limited",
        }
    }

    /// Part of normal operation in moderation (a redelivery, a missed delta
    /// being fetched): worth an info line, not a warning.
    pub fn is_ordering(&self) -> bool {
        matches!(self, Self::Stale { .. } | Self::Overlap { .. } | Self::Gap { .. })
    }
}

/// Exponential backoff between `min` and `max` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    min: u64,
    max: u64,
    current: u64,
}

impl Backoff {
    pub(crate) fn new(min: u64, max: u64) -> Self {
        let min = min.max(1);
        Self { min, max: max.max(min), current: min }
    }

    /// The delay to wait now; the next one is twice as long (up to `max`).
    pub(crate) fn next_delay(&mut self) -> u64 {
        let delay = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.min;
    }
}

/// `at + delay` milliseconds, saturating.
pub(crate) fn after(at: i64, delay: u64) -> i64 {
    at.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX))
}
