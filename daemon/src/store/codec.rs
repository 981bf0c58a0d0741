//! Byte formats of the stored values, and the checks on incoming templates.

use std::collections::BTreeSet;

use facegate_face::Template;
use facegate_protocol::{
    IdentityId, IdentityRecord, MAX_NAME_BYTES, MAX_TEMPLATES_PER_IDENTITY, ShardId, TemplateRecord,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{DeviceKey, GalleryModel, StoreError};

pub(crate) const IDENTITIES: &str = "identities";
pub(crate) const TEMPLATES: &str = "templates";
pub(crate) const META: &str = "meta";
pub(crate) const OUTBOX: &str = "outbox";

pub(crate) const META_SCHEMA: &[u8] = b"schema";
pub(crate) const META_MODEL: &[u8] = b"model";
pub(crate) const META_KEY_CHECK: &[u8] = b"key_check";
pub(crate) const META_AUDIT_SEQ: &[u8] = b"audit_seq";
pub(crate) const META_SEQ_PREFIX: &[u8] = b"seq/";
/// A random u64 chosen when the database is created: the epoch of its audit
/// outbox ([`facegate_protocol::AuditEvent::epoch`]).
pub(crate) const META_OUTBOX_EPOCH: &[u8] = b"outbox-epoch";

const KEY_CHECK_AAD: &[u8] = b"facegate key check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"facegate gallery key check v1";
const TEMPLATE_AAD_PREFIX: &[u8] = b"facegate template:";

/// The `identities` value: the record and the shards that include it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredIdentity {
    pub(crate) record: IdentityRecord,
    pub(crate) shards: BTreeSet<ShardId>,
}

pub(crate) fn to_cbor(value: &impl Serialize) -> Vec<u8> {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail and these types always serialize.
    let _ = ciborium::into_writer(value, &mut bytes);
    bytes
}

pub(crate) fn from_cbor<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    ciborium::from_reader(bytes).map_err(|e| StoreError::corrupt(format!("{what} does not decode: {e}")))
}

pub(crate) fn seq_key(shard: &ShardId) -> Vec<u8> {
    [META_SEQ_PREFIX, shard.as_str().as_bytes()].concat()
}

/// The shard named by a `meta` key, if it is a `seq/` key.
pub(crate) fn shard_of_seq_key(key: &[u8]) -> Option<Result<ShardId, StoreError>> {
    let name = key.strip_prefix(META_SEQ_PREFIX)?;
    Some(
        std::str::from_utf8(name)
            .ok()
            .and_then(|s| ShardId::new(s).ok())
            .ok_or_else(|| StoreError::corrupt("a shard sequence key is not a shard id")),
    )
}

pub(crate) fn u64_bytes(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

pub(crate) fn read_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::corrupt(format!("{what} is not 8 bytes")))?;
    Ok(u64::from_be_bytes(array))
}

pub(crate) fn identity_of_key(key: &[u8]) -> Result<IdentityId, StoreError> {
    std::str::from_utf8(key)
        .ok()
        .and_then(|s| IdentityId::new(s).ok())
        .ok_or_else(|| StoreError::corrupt("a key of the identities or templates tree is not an identity id"))
}

fn template_aad(identity: &IdentityId) -> Vec<u8> {
    [TEMPLATE_AAD_PREFIX, identity.as_str().as_bytes()].concat()
}

/// The encrypted `templates` value of `identity`.
pub(crate) fn seal_templates(
    key: &DeviceKey,
    identity: &IdentityId,
    templates: &[TemplateRecord],
) -> Result<Vec<u8>, StoreError> {
    key.seal(&template_aad(identity), &to_cbor(&templates))
}

/// Decrypts the `templates` value of `identity`. A value that does not
/// authenticate (altered, or moved from another identity) is corruption: the
/// key itself was checked at open.
pub(crate) fn open_templates(
    key: &DeviceKey,
    identity: &IdentityId,
    sealed: &[u8],
) -> Result<Vec<TemplateRecord>, StoreError> {
    let plaintext = key
        .open(&template_aad(identity), sealed)
        .ok_or_else(|| StoreError::corrupt(format!("the templates of {identity} do not authenticate")))?;
    from_cbor(&plaintext, "a template list")
}

pub(crate) fn key_check_value(key: &DeviceKey) -> Result<Vec<u8>, StoreError> {
    key.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)
}

pub(crate) fn key_matches(key: &DeviceKey, check: &[u8]) -> bool {
    key.open(KEY_CHECK_AAD, check).is_some_and(|p| p == KEY_CHECK_PLAINTEXT)
}

/// Checks an incoming identity and keeps the templates of the device's model.
/// Returns the kept templates and how many of another model were skipped.
/// A template of the device's model that is not a unit vector of its
/// dimension refuses the whole change.
pub(crate) fn admit(
    model: &GalleryModel,
    record: &IdentityRecord,
    templates: &[TemplateRecord],
) -> Result<(Vec<TemplateRecord>, usize), StoreError> {
    let invalid = |reason: String| StoreError::InvalidIdentity { identity: record.id.clone(), reason };
    if record.name.len() > MAX_NAME_BYTES {
        return Err(invalid(format!("the name is longer than {MAX_NAME_BYTES} bytes")));
    }
    if templates.len() > MAX_TEMPLATES_PER_IDENTITY {
        return Err(invalid(format!("more than {MAX_TEMPLATES_PER_IDENTITY} templates")));
    }
    let mut kept = Vec::with_capacity(templates.len());
    let mut skipped = 0;
    for (index, template) in templates.iter().enumerate() {
        if template.model_id != model.id {
            skipped += 1;
            continue;
        }
        to_template(template, model.dim).map_err(|e| StoreError::InvalidTemplate {
            identity: record.id.clone(),
            index,
            reason: e.to_string(),
        })?;
        kept.push(template.clone());
    }
    Ok((kept, skipped))
}

/// The matcher's template for a stored record of the device's model.
pub(crate) fn to_template(template: &TemplateRecord, dim: usize) -> Result<Template, facegate_face::FaceError> {
    Template::from_vector_bytes(template.model_id.clone(), &template.vector, dim)
}
