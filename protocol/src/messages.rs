//! Message types of the sync protocol (see DESIGN.md §5).
//!
//! Server → device messages (deltas, snapshots, acknowledgements, commands)
//! are signed by the central key; device → server messages travel on topics
//! only that device may publish to (broker ACL + client certificate).
//! Every struct refuses unknown fields: a message this version does not
//! understand is an error, never half-applied.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, IdentityId, ShardId};

/// Seconds since the Unix epoch, UTC.
pub type UnixSeconds = i64;
/// Milliseconds since the Unix epoch, UTC.
pub type UnixMillis = i64;

/// Longest display name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// Most templates one identity may carry.
pub const MAX_TEMPLATES_PER_IDENTITY: usize = 16;
/// Longest template vector, in bytes (1024 f32 values).
pub const MAX_TEMPLATE_BYTES: usize = 4096;
/// Longest model id, in bytes.
pub const MAX_MODEL_ID_BYTES: usize = 64;
/// Longest audit `reason`, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most audit events in one [`AuditBatch`].
pub const MAX_AUDIT_BATCH_EVENTS: usize = 256;
/// Most entries in one [`SnapshotChunk`].
pub const MAX_SNAPSHOT_CHUNK_ENTRIES: usize = 4096;
/// Most chunks in one snapshot.
pub const MAX_SNAPSHOT_CHUNKS: u32 = 65_536;
/// Most operations in one [`DeltaBatch`].
pub const MAX_DELTA_OPS: usize = 4096;
/// Most shards one device reports in its [`DeviceStatus`].
pub const MAX_STATUS_SHARDS: usize = 256;

/// A person as a kiosk needs to know them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityRecord {
    pub id: IdentityId,
    pub name: String,
    /// Access is allowed from this time on (inclusive); `None`: no start.
    pub valid_from: Option<UnixSeconds>,
    /// Access is allowed until this time (exclusive); `None`: no end.
    pub valid_until: Option<UnixSeconds>,
    /// Incremented centrally on every change of the record or its templates.
    pub version: u64,
    /// May be granted while the door's gallery is stale (security staff):
    /// see [`FreshnessProof`]. Off unless an administrator set it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub offline_access: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Why a person's name or validity window is refused: one rule for the
/// server's admin API and the kiosk's `gallery add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordFieldError {
    #[error("name must not be empty")]
    EmptyName,
    #[error("name is longer than {MAX_NAME_BYTES} bytes")]
    LongName,
    #[error("name contains control characters")]
    ControlCharacters,
    #[error("valid_until must be later than valid_from")]
    EmptyWindow,
}

/// A person's display name as entered: trimmed, not empty, at most
/// [`MAX_NAME_BYTES`], no control characters.
pub fn display_name(name: &str) -> Result<&str, RecordFieldError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(RecordFieldError::EmptyName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(RecordFieldError::LongName);
    }
    if name.chars().any(char::is_control) {
        return Err(RecordFieldError::ControlCharacters);
    }
    Ok(name)
}

/// A validity window (either end optional) that admits someone at some time.
pub fn validity_window<T: PartialOrd>(from: Option<T>, until: Option<T>) -> Result<(), RecordFieldError> {
    match (from, until) {
        (Some(from), Some(until)) if from >= until => Err(RecordFieldError::EmptyWindow),
        _ => Ok(()),
    }
}

impl IdentityRecord {
    /// Whether access is allowed at `now`.
    pub fn valid_at(&self, now: UnixSeconds) -> bool {
        self.valid_from.is_none_or(|from| now >= from) && self.valid_until.is_none_or(|until| now < until)
    }
}

/// One template: little-endian f32 values of a unit vector made by `model_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateRecord {
    pub model_id: String,
    #[serde(with = "serde_bytes")]
    pub vector: Vec<u8>,
}

/// One change to a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DeltaOp {
    /// Adds the identity or replaces its record and all of its templates.
    Upsert { identity: IdentityRecord, templates: Vec<TemplateRecord> },
    /// Forgets the identity and its templates.
    Remove { identity: IdentityId },
}

/// Consecutive changes to one shard: applying it to a shard at `base_seq`
/// brings it to `seq`. A device applies it only when its own sequence number
/// for the shard is exactly `base_seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaBatch {
    pub shard: ShardId,
    /// The log's epoch ([`FreshnessProof::epoch`]): sequence numbers of
    /// different epochs are unrelated, so a device applies only batches of
    /// its own epoch.
    pub epoch: u64,
    pub base_seq: u64,
    pub seq: u64,
    pub ops: Vec<DeltaOp>,
}

/// One identity of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotEntry {
    pub identity: IdentityRecord,
    pub templates: Vec<TemplateRecord>,
}

/// Part `index` of `count` of the state of `shard` at `seq`, sent when the
/// delta log no longer reaches back to a device's sequence number. The shard
/// is replaced only once every chunk of one `snapshot` has arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotChunk {
    pub shard: ShardId,
    /// The log's epoch the snapshot belongs to.
    pub epoch: u64,
    pub seq: u64,
    /// Distinguishes two snapshots of the same shard and seq.
    pub snapshot: u64,
    pub index: u32,
    pub count: u32,
    pub entries: Vec<SnapshotEntry>,
}

/// An order from the centre to one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Ask for every shard's missing deltas now.
    Resync,
    /// Forget every identity and template (the device is being decommissioned).
    Wipe,
    /// Encrypt the gallery under a fresh device key.
    RotateKey,
}

/// Which shards a device serves: `version` increases with every change
/// (a database counter), so an older assignment is never applied again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub version: u64,
    pub shards: Vec<ShardId>,
}

/// The centre's signed word that, when it answered the device's request
/// `nonce`, the log of epoch `epoch` ended at `heads` and the device was
/// assigned `assignment`. The nonce is the device's own random number, so a
/// proof cannot be replayed: a device counts a proof only against the
/// request it sent, and is fresh as of the moment it sent that request, for
/// each shard it has applied up to the proof's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessProof {
    pub nonce: u64,
    /// Changes when the log is reset or the database is restored: a device
    /// of another epoch forgets its synced shards and fetches them anew.
    pub epoch: u64,
    pub assignment: Assignment,
    /// The head of every assigned shard (shards with no entry yet at 0).
    pub heads: Vec<ShardProgress>,
}

/// What the centre sends one device on its `down` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Down {
    /// Deltas answering a resync request.
    Deltas(DeltaBatch),
    Snapshot(SnapshotChunk),
    /// Every audit event of outbox `epoch` with `seq <= up_to_seq` is
    /// stored centrally.
    AuditAck {
        #[serde(default, skip_serializing_if = "is_zero")]
        epoch: u64,
        up_to_seq: u64,
    },
    /// `id` increases per device, so a replayed command is refused.
    Command {
        id: u64,
        command: Command,
    },
    /// "The log of `shard` ends at `seq`": the answer to a resync request
    /// when there is nothing (more) to send, and after a partial answer. A
    /// device at `seq` knows it is current; one below asks again.
    Head {
        shard: ShardId,
        seq: u64,
    },
    /// The answer to [`Up::FreshnessRequest`].
    Freshness(FreshnessProof),
    /// The device's shards changed (pushed when an administrator changes
    /// its groups; proofs carry it too, for a device that missed the push).
    Assignment(Assignment),
    /// Trust `new_key` instead of the key that signed this message: the
    /// central signing key is being replaced. Signed by the outgoing key.
    KeyRollover {
        #[serde(with = "serde_bytes")]
        new_key: Vec<u8>,
    },
}

/// A signed message to one device. `device` is inside the signature, so a
/// message for one kiosk cannot be replayed to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownMessage {
    pub device: DeviceId,
    pub sent_at: UnixMillis,
    pub body: Down,
}

/// A door decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// A known, currently allowed person, shown live.
    Grant,
    /// A known person who is not allowed now (validity window).
    Deny,
    /// Nobody in the gallery matched.
    Unknown,
    /// A presentation attack, or a face never shown live.
    Spoof,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Deny => "deny",
            Self::Unknown => "unknown",
            Self::Spoof => "spoof",
        }
    }
}

/// Presentation-attack detection verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LivenessVerdict {
    Live,
    Spoof,
    Unsure,
}

/// Milliseconds spent per pipeline stage for a decision (sums over the
/// frames of the attempt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageMillis {
    pub detect: f32,
    pub align: f32,
    pub quality: f32,
    pub liveness: f32,
    pub embed: f32,
    #[serde(rename = "match")]
    pub matching: f32,
}

/// One decision as the audit trail records it. No face image, by design.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    pub device: DeviceId,
    /// The outbox's epoch: a random number chosen when the kiosk database
    /// was created, so a re-created database never reuses the key of an
    /// earlier event. 0: an event from before epochs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// Per device and epoch, strictly increasing; with `device` and
    /// `epoch`, the event's identity.
    pub seq: u64,
    pub at: UnixMillis,
    pub decision: Decision,
    pub identity: Option<IdentityId>,
    /// Best similarity found (any identity).
    pub score: Option<f32>,
    pub liveness: LivenessVerdict,
    pub liveness_score: Option<f32>,
    /// Why the decision was taken, for people reading the trail.
    pub reason: Option<String>,
    pub model_id: String,
    pub frames: u32,
    pub timings_ms: StageMillis,
}

/// One batch of audit events, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditBatch {
    pub events: Vec<AuditEvent>,
}

/// What a device sends the centre on its `up` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Up {
    /// "I am at `have_seq` of `shard`; send what I am missing."
    ResyncRequest {
        shard: ShardId,
        have_seq: u64,
    },
    Audit(AuditBatch),
    /// "I have applied `shard` up to `seq`" — the acknowledgement that makes
    /// removals provable.
    Applied {
        shard: ShardId,
        seq: u64,
    },
    /// "Tell me the heads of my shards": answered by [`Down::Freshness`]
    /// echoing `nonce` (random per request).
    FreshnessRequest {
        nonce: u64,
    },
}

/// A message from one device, signed with the device's provisioned key (the
/// key of its client certificate). The broker only lets a device publish on
/// its own topic, and the server checks `device` against the topic and the
/// signature against the device's certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpMessage {
    pub device: DeviceId,
    pub sent_at: UnixMillis,
    pub body: Up,
}

/// Applied sequence number of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardProgress {
    pub shard: ShardId,
    pub seq: u64,
}

/// A device's retained status (its last will says `online: false`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceStatus {
    pub device: DeviceId,
    pub online: bool,
    pub at: UnixMillis,
    pub shards: Vec<ShardProgress>,
    pub model_id: Option<String>,
    pub version: String,
    /// Short health words: "ok", "camera-lost", "degraded: …".
    pub health: String,
    pub outbox_depth: u64,
    /// Id of the last command the device has taken ([`Down::Command`]); 0:
    /// none. The server stops re-sending commands up to it.
    #[serde(default)]
    pub last_command: u64,
    /// Whether the door's gallery is stale (no valid freshness proof within
    /// its staleness bound): it then grants only `offline_access` people.
    #[serde(default)]
    pub stale: bool,
    /// The assignment version the device serves.
    #[serde(default)]
    pub assignment: u64,
    /// The central signing key the device trusts now (hex key id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_windows_follow_one_rule() {
        assert_eq!(display_name("  Ada Lovelace \n"), Ok("Ada Lovelace"));
        assert_eq!(display_name(" \t"), Err(RecordFieldError::EmptyName));
        assert_eq!(display_name("Ada\u{1b}[31m"), Err(RecordFieldError::ControlCharacters));
        assert_eq!(display_name(&"a".repeat(MAX_NAME_BYTES + 1)), Err(RecordFieldError::LongName));
        assert_eq!(validity_window(Some(10), Some(10)), Err(RecordFieldError::EmptyWindow));
        assert_eq!(validity_window(Some(10), Some(11)), Ok(()));
        assert_eq!(validity_window(None::<i64>, Some(0)), Ok(()));
    }
}
