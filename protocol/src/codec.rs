//! The wire format: a CBOR envelope `{v, kind, body, sig, key}` around a
//! CBOR-encoded message. Every message is signed: server → device bodies
//! with the central Ed25519 key, device → server bodies with the device's
//! ECDSA P-256 key (its certificate's key). The signature covers a domain
//! tag, the kind and the body bytes — so every field of the message,
//! sequence numbers and the addressed device included, is covered, and a
//! body cannot be moved to another kind. Sizes are checked
//! before parsing, the version and kind after, the signature before the body
//! is decoded, and the decoded message is validated before anyone may act on
//! it. Replays of correctly signed messages are the sync state machines'
//! business ([`crate::sync`]): they act on sequence numbers, which an
//! attacker cannot change without breaking the signature.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::ShardId;
use crate::messages::{
    Assignment, AuditBatch, AuditEvent, DeltaBatch, DeltaOp, DeviceStatus, Down, DownMessage, MAX_AUDIT_BATCH_EVENTS,
    MAX_DELTA_OPS, MAX_MODEL_ID_BYTES, MAX_NAME_BYTES, MAX_REASON_BYTES, MAX_SNAPSHOT_CHUNK_ENTRIES,
    MAX_SNAPSHOT_CHUNKS, MAX_STATUS_SHARDS, MAX_TEMPLATE_BYTES, MAX_TEMPLATES_PER_IDENTITY, SnapshotChunk,
    SnapshotEntry, TemplateRecord, Up, UpMessage,
};
use crate::signing::{
    DEVICE_SIGNATURE_MAX_LEN, DevicePublicKey, DeviceSigningKey, KeyId, SIGNATURE_LEN, SigningKey, TrustedKeys,
};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Domain separation tag mixed into every signature.
const SIGNATURE_DOMAIN: &[u8] = b"facegate/v1 signed message\0";

/// Deepest CBOR nesting accepted (our messages nest fewer than 10 levels).
const RECURSION_LIMIT: usize = 32;

/// Message kinds, each with its own size limit and signing rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `facegate/v1/shard/{shard}/delta`: a signed [`DeltaBatch`].
    Delta,
    /// `facegate/v1/device/{device}/down`: a signed [`DownMessage`].
    Down,
    /// `facegate/v1/device/{device}/up`: a device-signed [`UpMessage`].
    Up,
    /// `facegate/v1/device/{device}/status`: a device-signed [`DeviceStatus`].
    Status,
}

impl Kind {
    /// Largest encoded envelope accepted for this kind, in bytes.
    pub const fn max_bytes(self) -> usize {
        match self {
            Self::Delta | Self::Down => 1024 * 1024,
            Self::Up => 512 * 1024,
            Self::Status => 16 * 1024,
        }
    }

    /// Who signs messages of this kind.
    pub const fn signer(self) -> Signer {
        match self {
            Self::Delta | Self::Down => Signer::Central,
            Self::Up | Self::Status => Signer::Device,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Delta => "delta",
            Self::Down => "down",
            Self::Up => "up",
            Self::Status => "status",
        }
    }

    /// Every kind, for tests and tools.
    pub const ALL: [Kind; 4] = [Self::Delta, Self::Down, Self::Up, Self::Status];

    /// The kind named `name` on the wire.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// Who signs a kind of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The central Ed25519 key (pinned by devices at provisioning).
    Central,
    /// The sending device's ECDSA P-256 key (from its certificate).
    Device,
}

/// Why bytes were refused. Nothing is applied for any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{kind} message of {size} bytes exceeds the {max}-byte limit")]
    TooLarge { kind: &'static str, size: usize, max: usize },
    #[error("malformed CBOR in {what}: {message}")]
    Malformed { what: &'static str, message: String },
    #[error("protocol version {found} is not supported (this build speaks {PROTOCOL_VERSION})")]
    Version { found: u64 },
    #[error("unknown message kind {found:?}")]
    UnknownKind { found: String },
    #[error("expected a {expected} message, got {found}")]
    WrongKind { expected: &'static str, found: &'static str },
    #[error("{kind} message is not signed")]
    Unsigned { kind: &'static str },
    #[error("{kind} message is signed by unknown key {key}")]
    UnknownKey { kind: &'static str, key: String },
    #[error("{kind} message has a bad signature")]
    BadSignature { kind: &'static str },
    #[error("{kind} message must be signed by the {expected} key")]
    WrongSigner { kind: &'static str, expected: &'static str },
    #[error("invalid {kind} message: {message}")]
    Invalid { kind: &'static str, message: String },
    #[error("cannot encode {kind} message: {message}")]
    Encode { kind: &'static str, message: String },
}

/// The envelope as written. Absent `sig` and `key` are left out of the map.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    v: u64,
    /// A [`Kind`] name; kept as text so an unknown kind is a typed error.
    kind: String,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    sig: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "serde_bytes")]
    key: Option<Vec<u8>>,
}

/// Just the version of an envelope: read first, so a future envelope with
/// other fields is refused as a version mismatch rather than as garbage.
#[derive(Deserialize)]
struct VersionProbe {
    v: u64,
}

/// A message type with its kind and semantic checks.
pub trait Message: Serialize + DeserializeOwned {
    const KIND: Kind;
    /// Checks that serde cannot express (ordering, counts, lengths).
    fn validate(&self) -> Result<(), String>;
}

fn to_cbor<T: Serialize>(kind: Kind, value: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out)
        .map_err(|e| ProtocolError::Encode { kind: kind.as_str(), message: e.to_string() })?;
    Ok(out)
}

fn from_cbor<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, ProtocolError> {
    let mut reader = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut reader, RECURSION_LIMIT)
        .map_err(|e| ProtocolError::Malformed { what, message: e.to_string() })?;
    if !reader.is_empty() {
        return Err(ProtocolError::Malformed { what, message: format!("{} trailing bytes", reader.len()) });
    }
    Ok(value)
}

fn signed_bytes(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 8 + body.len());
    data.extend_from_slice(SIGNATURE_DOMAIN);
    data.extend_from_slice(kind.as_str().as_bytes());
    data.push(0);
    data.extend_from_slice(body);
    data
}

/// A key that can seal an envelope.
#[derive(Debug, Clone, Copy)]
pub enum SealKey<'a> {
    Central(&'a SigningKey),
    Device(&'a DeviceSigningKey),
}

fn seal(kind: Kind, body: Vec<u8>, key: Option<SealKey<'_>>) -> Result<Vec<u8>, ProtocolError> {
    let (sig, key) = match key {
        Some(SealKey::Central(key)) => (Some(key.sign(&signed_bytes(kind, &body))), Some(key.key_id().0.to_vec())),
        Some(SealKey::Device(key)) => {
            let sig = key
                .sign(&signed_bytes(kind, &body))
                .map_err(|e| ProtocolError::Encode { kind: kind.as_str(), message: e.to_string() })?;
            (Some(sig), Some(key.key_id().0.to_vec()))
        }
        None => (None, None),
    };
    let envelope = Envelope { v: u64::from(PROTOCOL_VERSION), kind: kind.as_str().to_string(), body, sig, key };
    let bytes = to_cbor(kind, &envelope)?;
    if bytes.len() > kind.max_bytes() {
        return Err(ProtocolError::TooLarge { kind: kind.as_str(), size: bytes.len(), max: kind.max_bytes() });
    }
    Ok(bytes)
}

/// Encodes and signs a server → device message with the central key.
pub fn encode_signed<M: Message>(message: &M, key: &SigningKey) -> Result<Vec<u8>, ProtocolError> {
    let kind = M::KIND;
    if kind.signer() != Signer::Central {
        return Err(ProtocolError::WrongSigner { kind: kind.as_str(), expected: "device" });
    }
    message.validate().map_err(|message| ProtocolError::Invalid { kind: kind.as_str(), message })?;
    seal(kind, to_cbor(kind, message)?, Some(SealKey::Central(key)))
}

/// Encodes and signs a device → server message with the device's key.
pub fn encode_device_signed<M: Message>(message: &M, key: &DeviceSigningKey) -> Result<Vec<u8>, ProtocolError> {
    let kind = M::KIND;
    if kind.signer() != Signer::Device {
        return Err(ProtocolError::WrongSigner { kind: kind.as_str(), expected: "central" });
    }
    message.validate().map_err(|message| ProtocolError::Invalid { kind: kind.as_str(), message })?;
    seal(kind, to_cbor(kind, message)?, Some(SealKey::Device(key)))
}

/// Wraps `body` — any bytes, not checked — in a current envelope of `kind`,
/// signed with `key` when given (whatever the kind). For tests, fuzzing and
/// tools that must produce malformed, unsigned or misdirected messages;
/// production code uses [`encode_signed`] and [`encode_device_signed`].
/// Still refuses an envelope over the kind's size limit.
pub fn seal_unchecked(kind: Kind, body: &[u8], key: Option<SealKey<'_>>) -> Result<Vec<u8>, ProtocolError> {
    seal(kind, body.to_vec(), key)
}

fn open(kind: Kind, bytes: &[u8]) -> Result<Envelope, ProtocolError> {
    if bytes.len() > kind.max_bytes() {
        return Err(ProtocolError::TooLarge { kind: kind.as_str(), size: bytes.len(), max: kind.max_bytes() });
    }
    let probe: VersionProbe = from_cbor("envelope", bytes)?;
    if probe.v != u64::from(PROTOCOL_VERSION) {
        return Err(ProtocolError::Version { found: probe.v });
    }
    let envelope: Envelope = from_cbor("envelope", bytes)?;
    let found =
        Kind::from_name(&envelope.kind).ok_or_else(|| ProtocolError::UnknownKind { found: short(&envelope.kind) })?;
    if found != kind {
        return Err(ProtocolError::WrongKind { expected: kind.as_str(), found: found.as_str() });
    }
    Ok(envelope)
}

/// At most 64 characters of `text`, for error messages.
fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

fn body<M: Message>(envelope: &Envelope) -> Result<M, ProtocolError> {
    let message: M = from_cbor(M::KIND.as_str(), &envelope.body)?;
    message.validate().map_err(|message| ProtocolError::Invalid { kind: M::KIND.as_str(), message })?;
    Ok(message)
}

/// The signature and key id of an envelope, or why there are none.
fn signature_of(kind: Kind, envelope: &Envelope) -> Result<(&[u8], KeyId), ProtocolError> {
    let (Some(sig), Some(key)) = (&envelope.sig, &envelope.key) else {
        return Err(ProtocolError::Unsigned { kind: kind.as_str() });
    };
    let key_id = KeyId::from_slice(key)
        .ok_or_else(|| ProtocolError::UnknownKey { kind: kind.as_str(), key: hex(&key[..key.len().min(32)]) })?;
    Ok((sig, key_id))
}

/// Decodes a centrally signed message, verifying its signature against the
/// pinned keys before the body is parsed.
pub fn decode_verified<M: Message>(bytes: &[u8], keys: &TrustedKeys) -> Result<M, ProtocolError> {
    decode_verified_with_key(bytes, keys).map(|(message, _)| message)
}

/// [`decode_verified`], also naming the key that signed the message.
pub fn decode_verified_with_key<M: Message>(bytes: &[u8], keys: &TrustedKeys) -> Result<(M, KeyId), ProtocolError> {
    let kind = M::KIND;
    if kind.signer() != Signer::Central {
        return Err(ProtocolError::WrongSigner { kind: kind.as_str(), expected: "device" });
    }
    let envelope = open(kind, bytes)?;
    let (sig, key_id) = signature_of(kind, &envelope)?;
    let public =
        keys.get(&key_id).ok_or_else(|| ProtocolError::UnknownKey { kind: kind.as_str(), key: key_id.to_string() })?;
    if sig.len() != SIGNATURE_LEN {
        return Err(ProtocolError::BadSignature { kind: kind.as_str() });
    }
    public
        .verify(&signed_bytes(kind, &envelope.body), sig)
        .map_err(|_| ProtocolError::BadSignature { kind: kind.as_str() })?;
    Ok((body(&envelope)?, key_id))
}

/// Decodes a device-signed message, verifying its signature against the
/// device's public key before the body is parsed.
pub fn decode_device_verified<M: Message>(bytes: &[u8], key: &DevicePublicKey) -> Result<M, ProtocolError> {
    let kind = M::KIND;
    if kind.signer() != Signer::Device {
        return Err(ProtocolError::WrongSigner { kind: kind.as_str(), expected: "central" });
    }
    let envelope = open(kind, bytes)?;
    let (sig, key_id) = signature_of(kind, &envelope)?;
    if key_id != key.key_id() {
        return Err(ProtocolError::UnknownKey { kind: kind.as_str(), key: key_id.to_string() });
    }
    if sig.is_empty() || sig.len() > DEVICE_SIGNATURE_MAX_LEN {
        return Err(ProtocolError::BadSignature { kind: kind.as_str() });
    }
    key.verify(&signed_bytes(kind, &envelope.body), sig)
        .map_err(|_| ProtocolError::BadSignature { kind: kind.as_str() })?;
    body(&envelope)
}

/// Decodes the body of a message without checking its signature: only for
/// tools that display what they captured, never to act on.
pub fn decode_unverified<M: Message>(bytes: &[u8]) -> Result<M, ProtocolError> {
    let envelope = open(M::KIND, bytes)?;
    body(&envelope)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn validate_templates(templates: &[TemplateRecord]) -> Result<(), String> {
    if templates.len() > MAX_TEMPLATES_PER_IDENTITY {
        return Err(format!("{} templates (at most {MAX_TEMPLATES_PER_IDENTITY})", templates.len()));
    }
    for t in templates {
        validate_model_id(&t.model_id)?;
        if t.vector.is_empty() || t.vector.len() > MAX_TEMPLATE_BYTES || t.vector.len() % 4 != 0 {
            return Err(format!(
                "template of {} bytes is not a vector of f32 (4..{MAX_TEMPLATE_BYTES})",
                t.vector.len()
            ));
        }
    }
    Ok(())
}

fn validate_model_id(model_id: &str) -> Result<(), String> {
    if model_id.is_empty() || model_id.len() > MAX_MODEL_ID_BYTES {
        return Err(format!("model id must be 1-{MAX_MODEL_ID_BYTES} bytes"));
    }
    Ok(())
}

fn validate_upsert(identity: &crate::messages::IdentityRecord, templates: &[TemplateRecord]) -> Result<(), String> {
    if identity.name.len() > MAX_NAME_BYTES {
        return Err(format!("name of {} is longer than {MAX_NAME_BYTES} bytes", identity.id));
    }
    if let (Some(from), Some(until)) = (identity.valid_from, identity.valid_until)
        && from >= until
    {
        return Err(format!("validity window of {} is empty", identity.id));
    }
    validate_templates(templates)
}

fn validate_ops(ops: &[DeltaOp]) -> Result<(), String> {
    if ops.len() > MAX_DELTA_OPS {
        return Err(format!("{} operations (at most {MAX_DELTA_OPS})", ops.len()));
    }
    for op in ops {
        if let DeltaOp::Upsert { identity, templates } = op {
            validate_upsert(identity, templates)?;
        }
    }
    Ok(())
}

impl Message for DeltaBatch {
    const KIND: Kind = Kind::Delta;
    fn validate(&self) -> Result<(), String> {
        if self.epoch == 0 {
            return Err("epoch 0 is not an epoch".into());
        }
        if self.seq <= self.base_seq {
            return Err(format!("seq {} is not after base_seq {}", self.seq, self.base_seq));
        }
        if self.ops.is_empty() {
            return Err("no operations".into());
        }
        validate_ops(&self.ops)
    }
}

impl Message for DownMessage {
    const KIND: Kind = Kind::Down;
    fn validate(&self) -> Result<(), String> {
        match &self.body {
            Down::Deltas(batch) => batch.validate(),
            Down::Snapshot(chunk) => validate_snapshot(chunk),
            Down::Freshness(proof) => {
                if proof.epoch == 0 {
                    return Err("epoch 0 is not an epoch".into());
                }
                if proof.heads.len() > MAX_STATUS_SHARDS {
                    return Err(format!("{} shard heads (at most {MAX_STATUS_SHARDS})", proof.heads.len()));
                }
                validate_assignment(&proof.assignment)
            }
            Down::Assignment(assignment) => validate_assignment(assignment),
            Down::KeyRollover { new_key } => {
                if new_key.len() != 32 {
                    return Err(format!("an Ed25519 public key is 32 bytes, got {}", new_key.len()));
                }
                Ok(())
            }
            Down::AuditAck { .. } | Down::Command { .. } | Down::Head { .. } => Ok(()),
        }
    }
}

fn validate_assignment(assignment: &Assignment) -> Result<(), String> {
    if assignment.shards.len() > MAX_STATUS_SHARDS {
        return Err(format!("{} shards assigned (at most {MAX_STATUS_SHARDS})", assignment.shards.len()));
    }
    let mut sorted: Vec<&ShardId> = assignment.shards.iter().collect();
    sorted.sort();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err("a shard is assigned twice".into());
    }
    Ok(())
}

fn validate_snapshot(chunk: &SnapshotChunk) -> Result<(), String> {
    if chunk.epoch == 0 {
        return Err("epoch 0 is not an epoch".into());
    }
    if chunk.count == 0 || chunk.index >= chunk.count || chunk.count > MAX_SNAPSHOT_CHUNKS {
        return Err(format!("chunk {} of {} (at most {MAX_SNAPSHOT_CHUNKS} chunks)", chunk.index, chunk.count));
    }
    if chunk.entries.len() > MAX_SNAPSHOT_CHUNK_ENTRIES {
        return Err(format!("{} entries in one chunk (at most {MAX_SNAPSHOT_CHUNK_ENTRIES})", chunk.entries.len()));
    }
    for SnapshotEntry { identity, templates } in &chunk.entries {
        validate_upsert(identity, templates)?;
    }
    Ok(())
}

fn finite(what: &str, value: Option<f32>) -> Result<(), String> {
    match value {
        Some(v) if !v.is_finite() => Err(format!("{what} is not a finite number")),
        _ => Ok(()),
    }
}

fn validate_event(event: &AuditEvent) -> Result<(), String> {
    validate_model_id(&event.model_id)?;
    if event.reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
        return Err(format!("reason longer than {MAX_REASON_BYTES} bytes"));
    }
    finite("score", event.score)?;
    finite("liveness score", event.liveness_score)?;
    let t = event.timings_ms;
    for (name, value) in [
        ("detect", t.detect),
        ("align", t.align),
        ("quality", t.quality),
        ("liveness", t.liveness),
        ("embed", t.embed),
        ("match", t.matching),
    ] {
        finite(name, Some(value))?;
    }
    Ok(())
}

impl Message for UpMessage {
    const KIND: Kind = Kind::Up;
    fn validate(&self) -> Result<(), String> {
        match &self.body {
            Up::Audit(AuditBatch { events }) => {
                if events.is_empty() {
                    return Err("empty audit batch".into());
                }
                if events.len() > MAX_AUDIT_BATCH_EVENTS {
                    return Err(format!("{} audit events (at most {MAX_AUDIT_BATCH_EVENTS})", events.len()));
                }
                for pair in events.windows(2) {
                    if pair[1].seq <= pair[0].seq {
                        return Err("audit events are not in increasing seq order".into());
                    }
                }
                if let Some(e) = events.iter().find(|e| e.device != self.device) {
                    return Err(format!("audit event of device {} sent by {}", e.device, self.device));
                }
                if events.windows(2).any(|pair| pair[0].epoch != pair[1].epoch) {
                    return Err("audit events of several outbox epochs in one batch".into());
                }
                events.iter().try_for_each(validate_event)
            }
            Up::ResyncRequest { .. } | Up::Applied { .. } | Up::FreshnessRequest { .. } => Ok(()),
        }
    }
}

impl Message for DeviceStatus {
    const KIND: Kind = Kind::Status;
    fn validate(&self) -> Result<(), String> {
        if self.version.len() > 64 || self.health.len() > 256 {
            return Err("version or health text too long".into());
        }
        if self.shards.len() > MAX_STATUS_SHARDS {
            return Err(format!("{} shards (at most {MAX_STATUS_SHARDS})", self.shards.len()));
        }
        if let Some(model_id) = &self.model_id {
            validate_model_id(model_id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
