//! The stored documents. Integers are `i64` (BSON has no unsigned type);
//! times are milliseconds since the Unix epoch.

use mongodb::bson::{Binary, Document, spec::BinarySubtype};
use serde::{Deserialize, Serialize};

/// Raw bytes as BSON binary.
pub fn binary(bytes: Vec<u8>) -> Binary {
    Binary { subtype: BinarySubtype::Generic, bytes }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
    pub groups: Vec<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub created_by: String,
    /// Admitted by a door whose gallery is stale (security staff); absent
    /// in documents from before the flag: `false`.
    #[serde(default)]
    pub offline_access: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub identity: String,
    pub model_id: String,
    /// Little-endian f32 values of the unit vector.
    pub vector: Binary,
    /// The photo it was made from.
    pub photo: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhotoDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub identity: String,
    pub nonce: Binary,
    /// AES-256-GCM ciphertext and tag; associated data `"{photo}/{identity}"`.
    pub ciphertext: Binary,
    /// Size of the plain photo.
    pub bytes: i64,
    /// The file name it was uploaded under, if any.
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Created; waiting for its provisioning token to be used.
    Pending,
    Active,
    /// Refused from now on.
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    pub groups: Vec<String>,
    pub state: DeviceState,
    /// SHA-256 of the one-time provisioning token (the token itself is shown once).
    pub token_hash: Option<String>,
    pub token_expires_at: Option<i64>,
    pub created_at: i64,
    pub provisioned_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Shard id → highest sequence number the device has applied.
    #[serde(default)]
    pub applied: Document,
    /// Serial number (hex) of the certificate issued at provisioning (a
    /// device is provisioned once: only a pending device's token redeems).
    #[serde(default)]
    pub certificate_serial: Option<String>,
    pub last_seen: Option<i64>,
    #[serde(default)]
    pub online: bool,
    pub model_id: Option<String>,
    pub software_version: Option<String>,
    /// The uncompressed P-256 point (65 bytes) of the key its certificate
    /// certifies, recorded at provisioning: its uplinks must verify with it.
    #[serde(default)]
    pub public_key: Option<Binary>,
    /// Increases with every change of `groups`, in the same update: the
    /// version of the signed `Assignment` the device is sent.
    #[serde(default)]
    pub assignment_version: i64,
    /// The current assignment has not been pushed to the device yet.
    #[serde(default)]
    pub assignment_pending: bool,
    /// Shard → the assignment version that took it away from the device:
    /// the device held its people, and counts as having forgotten them once
    /// its status shows that version and no longer lists the shard.
    #[serde(default)]
    pub dropped: Document,
    /// From its latest status: the assignment version it serves…
    #[serde(default)]
    pub reported_assignment: Option<i64>,
    /// …the shards it lists…
    #[serde(default)]
    pub reported_shards: Option<Vec<String>>,
    /// …and the central signing key it trusts (hex key id).
    #[serde(default)]
    pub trusted_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeltaKind {
    Upsert,
    Remove,
}

/// One delta-log entry. It names the identity, not its data: reading the log
/// materialises the current record and templates (a forgotten person's
/// templates are therefore gone from the log too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub shard: String,
    pub seq: i64,
    pub kind: DeltaKind,
    pub identity: String,
    /// The identity's version when the entry was written.
    pub version: i64,
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// The identity's templates (may) have changed: reload them.
    Upsert,
    Remove,
}

/// One entry of the global change log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeDoc {
    #[serde(rename = "_id")]
    pub seq: i64,
    pub identity: String,
    pub op: ChangeOp,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageMillisDoc {
    pub detect: f64,
    pub align: f64,
    pub quality: f64,
    pub liveness: f64,
    pub embed: f64,
    #[serde(rename = "match")]
    pub matching: f64,
}

/// A door decision, as received from a kiosk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditDoc {
    /// `"{device}:{seq:020}"` (outbox epoch 0), `"{device}:{epoch:020}:{seq:020}"`.
    #[serde(rename = "_id")]
    pub id: String,
    pub device: String,
    /// The device's outbox epoch (0: from before epochs), bit for bit
    /// ([`super::audit::epoch_to_bson`]: epochs above `i64::MAX` are negative).
    #[serde(default)]
    pub epoch: i64,
    pub seq: i64,
    pub at: i64,
    pub decision: String,
    pub identity: Option<String>,
    pub score: Option<f64>,
    pub liveness: String,
    pub liveness_score: Option<f64>,
    pub reason: Option<String>,
    pub model_id: String,
    pub frames: i64,
    pub timings_ms: StageMillisDoc,
    pub received_at: i64,
}

/// An administrative action (successful or refused), for the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminActionDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub at: i64,
    pub actor: String,
    pub role: String,
    /// `identity.create`, `identity.delete`, `device.revoke`, `login.failed`, …
    pub action: String,
    pub target: Option<String>,
    /// `ok`, or why it was refused.
    pub outcome: String,
    pub detail: Document,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDoc {
    #[serde(rename = "_id")]
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub role: String,
    pub created_at: i64,
    #[serde(default)]
    pub disabled: bool,
}

/// Proof-of-forgetting bookkeeping: the shards that had the person and the
/// sequence number of the `Remove` in each. No name, no template, no photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErasureDoc {
    #[serde(rename = "_id")]
    pub identity: String,
    pub requested_at: i64,
    pub requested_by: String,
    pub shards: Vec<ShardSeq>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSeq {
    pub shard: String,
    pub seq: i64,
}
