//! The wire format: a CBOR envelope `{v, kind, body, sig, key}` around a
//! CBOR-encoded message. Server → device bodies are signed with Ed25519; the
//! signature covers a domain tag, the kind and the body bytes. Sizes are
//! checked before parsing, the version and kind after, the signature before
//! the body is decoded, and the decoded message is validated before anyone
//! may act on it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::messages::{
    AuditBatch, DeltaBatch, DeltaOp, DeviceStatus, Down, DownMessage, MAX_NAME_BYTES, MAX_TEMPLATE_BYTES,
    MAX_TEMPLATES_PER_IDENTITY, SnapshotChunk, TemplateRecord, Up, UpMessage,
};
use crate::signing::{KeyId, SigningKey, TrustedKeys};

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
    /// `facegate/v1/device/{device}/up`: an [`UpMessage`].
    Up,
    /// `facegate/v1/device/{device}/status`: a [`DeviceStatus`].
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

    pub const fn signed(self) -> bool {
        matches!(self, Self::Delta | Self::Down)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Delta => "delta",
            Self::Down => "down",
            Self::Up => "up",
            Self::Status => "status",
        }
    }
}

/// Why bytes were refused. Nothing is applied for any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{kind} message of {size} bytes exceeds the {max}-byte limit")]
    TooLarge { kind: &'static str, size: usize, max: usize },
    #[error("malformed CBOR in {what}: {message}")]
    Malformed { what: &'static str, message: String },
    #[error("protocol version {found} is not supported (this build speaks {PROTOCOL_VERSION})")]
    Version { found: u16 },
    #[error("expected a {expected} message, got {found}")]
    WrongKind { expected: &'static str, found: &'static str },
    #[error("{kind} message is not signed")]
    Unsigned { kind: &'static str },
    #[error("{kind} message is signed by unknown key {key}")]
    UnknownKey { kind: &'static str, key: String },
    #[error("{kind} message has a bad signature")]
    BadSignature { kind: &'static str },
    #[error("{kind} message carries a signature where none belongs")]
    UnexpectedSignature { kind: &'static str },
    #[error("invalid {kind} message: {message}")]
    Invalid { kind: &'static str, message: String },
    #[error("cannot encode {kind} message: {message}")]
    Encode { kind: &'static str, message: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    v: u16,
    kind: Kind,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(default, with = "serde_bytes")]
    sig: Option<Vec<u8>>,
    #[serde(default, with = "serde_bytes")]
    key: Option<Vec<u8>>,
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

fn finish(kind: Kind, envelope: &Envelope) -> Result<Vec<u8>, ProtocolError> {
    let bytes = to_cbor(kind, envelope)?;
    if bytes.len() > kind.max_bytes() {
        return Err(ProtocolError::TooLarge { kind: kind.as_str(), size: bytes.len(), max: kind.max_bytes() });
    }
    Ok(bytes)
}

/// Encodes and signs a server → device message.
pub fn encode_signed<M: Message>(message: &M, key: &SigningKey) -> Result<Vec<u8>, ProtocolError> {
    let kind = M::KIND;
    message.validate().map_err(|message| ProtocolError::Invalid { kind: kind.as_str(), message })?;
    let body = to_cbor(kind, message)?;
    let sig = key.sign(&signed_bytes(kind, &body));
    finish(kind, &Envelope { v: PROTOCOL_VERSION, kind, body, sig: Some(sig), key: Some(key.key_id().0.to_vec()) })
}

/// Encodes an unsigned device → server message.
pub fn encode<M: Message>(message: &M) -> Result<Vec<u8>, ProtocolError> {
    let kind = M::KIND;
    if kind.signed() {
        return Err(ProtocolError::Encode { kind: kind.as_str(), message: "this kind must be signed".into() });
    }
    message.validate().map_err(|message| ProtocolError::Invalid { kind: kind.as_str(), message })?;
    let body = to_cbor(kind, message)?;
    finish(kind, &Envelope { v: PROTOCOL_VERSION, kind, body, sig: None, key: None })
}

fn open(kind: Kind, bytes: &[u8]) -> Result<Envelope, ProtocolError> {
    if bytes.len() > kind.max_bytes() {
        return Err(ProtocolError::TooLarge { kind: kind.as_str(), size: bytes.len(), max: kind.max_bytes() });
    }
    let envelope: Envelope = from_cbor("envelope", bytes)?;
    if envelope.v != PROTOCOL_VERSION {
        return Err(ProtocolError::Version { found: envelope.v });
    }
    if envelope.kind != kind {
        return Err(ProtocolError::WrongKind { expected: kind.as_str(), found: envelope.kind.as_str() });
    }
    Ok(envelope)
}

fn body<M: Message>(envelope: &Envelope) -> Result<M, ProtocolError> {
    let message: M = from_cbor(M::KIND.as_str(), &envelope.body)?;
    message.validate().map_err(|message| ProtocolError::Invalid { kind: M::KIND.as_str(), message })?;
    Ok(message)
}

/// Decodes a signed message, verifying its signature against the pinned keys
/// before the body is parsed.
pub fn decode_verified<M: Message>(bytes: &[u8], keys: &TrustedKeys) -> Result<M, ProtocolError> {
    let kind = M::KIND;
    let envelope = open(kind, bytes)?;
    let (Some(sig), Some(key)) = (&envelope.sig, &envelope.key) else {
        return Err(ProtocolError::Unsigned { kind: kind.as_str() });
    };
    let key_id = KeyId::from_slice(key).ok_or(ProtocolError::UnknownKey { kind: kind.as_str(), key: hex(key) })?;
    let public = keys.get(&key_id).ok_or(ProtocolError::UnknownKey { kind: kind.as_str(), key: key_id.to_string() })?;
    public
        .verify(&signed_bytes(kind, &envelope.body), sig)
        .map_err(|_| ProtocolError::BadSignature { kind: kind.as_str() })?;
    body(&envelope)
}

/// Decodes an unsigned message.
pub fn decode<M: Message>(bytes: &[u8]) -> Result<M, ProtocolError> {
    let kind = M::KIND;
    let envelope = open(kind, bytes)?;
    if envelope.sig.is_some() || envelope.key.is_some() {
        return Err(ProtocolError::UnexpectedSignature { kind: kind.as_str() });
    }
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
        if t.model_id.is_empty() || t.model_id.len() > 64 {
            return Err("template model id must be 1-64 bytes".into());
        }
        if t.vector.is_empty() || t.vector.len() > MAX_TEMPLATE_BYTES || t.vector.len() % 4 != 0 {
            return Err(format!(
                "template of {} bytes is not a vector of f32 (4..{MAX_TEMPLATE_BYTES})",
                t.vector.len()
            ));
        }
    }
    Ok(())
}

fn validate_ops(ops: &[DeltaOp]) -> Result<(), String> {
    for op in ops {
        if let DeltaOp::Upsert { identity, templates } = op {
            if identity.name.len() > MAX_NAME_BYTES {
                return Err(format!("name of {} is longer than {MAX_NAME_BYTES} bytes", identity.id));
            }
            if let (Some(from), Some(until)) = (identity.valid_from, identity.valid_until)
                && from >= until
            {
                return Err(format!("validity window of {} is empty", identity.id));
            }
            validate_templates(templates)?;
        }
    }
    Ok(())
}

impl Message for DeltaBatch {
    const KIND: Kind = Kind::Delta;
    fn validate(&self) -> Result<(), String> {
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
            Down::AuditAck { .. } | Down::Command { .. } => Ok(()),
        }
    }
}

fn validate_snapshot(chunk: &SnapshotChunk) -> Result<(), String> {
    if chunk.count == 0 || chunk.index >= chunk.count {
        return Err(format!("chunk {} of {}", chunk.index, chunk.count));
    }
    for entry in &chunk.entries {
        validate_ops(std::slice::from_ref(&DeltaOp::Upsert {
            identity: entry.identity.clone(),
            templates: entry.templates.clone(),
        }))?;
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
                for pair in events.windows(2) {
                    if pair[1].seq <= pair[0].seq {
                        return Err("audit events are not in increasing seq order".into());
                    }
                }
                if let Some(e) = events.iter().find(|e| e.device != self.device) {
                    return Err(format!("audit event of device {} sent by {}", e.device, self.device));
                }
                Ok(())
            }
            Up::ResyncRequest { .. } | Up::Applied { .. } => Ok(()),
        }
    }
}

impl Message for DeviceStatus {
    const KIND: Kind = Kind::Status;
    fn validate(&self) -> Result<(), String> {
        if self.version.len() > 64 || self.health.len() > 256 {
            return Err("version or health text too long".into());
        }
        Ok(())
    }
}
