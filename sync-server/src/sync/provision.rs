//! `POST /v1/provision`: a kiosk trades its one-time token and a CSR for
//! what it needs to sync.
//!
//! Request (JSON): `{"token": "…", "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----…"}`.
//!
//! Answer 200 (JSON):
//! `{"device_id", "certificate_pem", "ca_pem", "mqtt": {"host", "port", "tls"},
//! "signing_keys": [{"key_id", "public_key_hex"}], "shards": [...], "assignment_version"}` —
//! `certificate_pem` certifies the CSR's key with CN = the device id (the
//! subject and names the CSR asks for are ignored); `ca_pem` signed both it
//! and the broker's certificate; `key_id` is [`facegate_protocol::KeyId`]
//! (hex of the first 8 bytes of SHA-256 of the public key).
//!
//! The CSR's key must be ECDSA P-256: the device signs its uplinks with it,
//! and its public point is recorded with the device so the sync service can
//! verify them.
//!
//! The CSR is checked before the token is used, so a bad CSR does not burn
//! the token. An unknown, used or expired token is 401; nothing is issued.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use facegate_protocol::DeviceId;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::pki::{Pki, PkiError};
use crate::store::{Store, StoreError};

/// Largest request body, in bytes.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024;

/// The request body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    pub token: String,
    pub csr_pem: String,
}

/// Where the device connects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttEndpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// One pinned signing key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyInfo {
    pub key_id: String,
    pub public_key_hex: String,
}

/// The answer body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionResponse {
    pub device_id: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub mqtt: MqttEndpoint,
    pub signing_keys: Vec<SigningKeyInfo>,
    pub shards: Vec<String>,
    /// The version of that shard list (the device's `Assignment`); later
    /// changes come as signed `Assignment`s with higher versions.
    #[serde(default)]
    pub assignment_version: u64,
}

/// Why provisioning was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("provisioning is not enabled on this server ([sync] enabled = false)")]
    Disabled,
    #[error("the request body is not valid JSON of the form {{\"token\", \"csr_pem\"}}: {0}")]
    BadRequest(String),
    #[error("the request body is larger than {MAX_REQUEST_BYTES} bytes")]
    TooLarge,
    #[error("the provisioning token is unknown, already used or expired")]
    BadToken,
    #[error(transparent)]
    Csr(PkiError),
    #[error("the certificate signing request's key must be ECDSA P-256 (the device signs its uplinks with it)")]
    CsrKey,
    #[error("the device id {0:?} cannot be used in MQTT topics")]
    BadDeviceId(String),
    #[error("certificate issuance failed: {0}")]
    Pki(PkiError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
}

impl ProvisionError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Disabled => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadToken => StatusCode::UNAUTHORIZED,
            Self::Csr(_) | Self::CsrKey => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadDeviceId(_) | Self::Pki(_) | Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Disabled => "provisioning-disabled",
            Self::BadRequest(_) | Self::TooLarge => "bad-request",
            Self::BadToken => "bad-provisioning-token",
            Self::Csr(_) | Self::CsrKey => "bad-csr",
            Self::BadDeviceId(_) | Self::Pki(_) | Self::Store(_) => "error",
        }
    }
}

impl IntoResponse for ProvisionError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = if status.is_server_error() && !matches!(self, Self::Disabled) {
            log::error!(error:% = self; "provisioning failed");
            "internal error; the server log has the details".to_string()
        } else {
            log::warn!(error:% = self, status = status.as_u16(); "provisioning refused");
            self.to_string()
        };
        let body = json!({
            "type": format!("https://facegate.invalid/problems/{}", self.kind()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
        });
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

/// Issues device certificates against one-time tokens.
#[derive(Debug)]
pub struct Provisioner {
    pub store: Store,
    pub pki: Arc<Pki>,
    pub mqtt: MqttEndpoint,
    pub certificate_days: u32,
}

impl Provisioner {
    /// Checks the CSR, redeems the token, certifies the key.
    pub async fn provision(&self, request: &ProvisionRequest) -> Result<ProvisionResponse, ProvisionError> {
        let csr = super::pki::parse_csr(&request.csr_pem).map_err(ProvisionError::Csr)?;
        let public_key = device_public_key(&csr)?;
        if request.token.is_empty() || request.token.len() > 256 {
            return Err(ProvisionError::BadToken);
        }
        let token_hash =
            crate::crypto::hex(ring::digest::digest(&ring::digest::SHA256, request.token.as_bytes()).as_ref());
        // The serial is recorded with the token's redemption, in one
        // update, so every certificate issued can be revoked.
        let serial = super::pki::new_serial().map_err(ProvisionError::Pki)?;
        let device = self
            .store
            .redeem_provisioning_token(&token_hash, &crate::crypto::hex(&serial), public_key.as_bytes())
            .await?
            .ok_or(ProvisionError::BadToken)?;
        let device_id = DeviceId::new(device.id.clone()).map_err(|_| ProvisionError::BadDeviceId(device.id.clone()))?;
        let certificate_pem = self
            .pki
            .issue_device_certificate(&device_id, &request.csr_pem, self.certificate_days, &serial)
            .map_err(ProvisionError::Pki)?;
        let key = self.pki.signing_public_key();
        log::info!(device = device.id.as_str(), shards:? = device.groups; "device provisioned");
        Ok(ProvisionResponse {
            device_id: device.id,
            certificate_pem,
            ca_pem: self.pki.ca_pem().to_string(),
            mqtt: self.mqtt.clone(),
            signing_keys: vec![SigningKeyInfo {
                key_id: key.key_id().to_string(),
                public_key_hex: crate::crypto::hex(key.as_bytes()),
            }],
            shards: device.groups,
            assignment_version: u64::try_from(device.assignment_version).unwrap_or(0),
        })
    }
}

/// The uplink key of a CSR: its P-256 public point.
pub fn device_public_key(
    csr: &rcgen::CertificateSigningRequestParams,
) -> Result<facegate_protocol::DevicePublicKey, ProvisionError> {
    use rcgen::PublicKeyData;
    if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(ProvisionError::CsrKey);
    }
    facegate_protocol::DevicePublicKey::from_point(csr.public_key.der_bytes()).map_err(|_| ProvisionError::CsrKey)
}

/// The `POST /v1/provision` handler; the [`Provisioner`] comes from an
/// [`Extension`] layer (absent: provisioning is disabled, 503).
pub async fn handle(provisioner: Option<Extension<Arc<Provisioner>>>, body: Bytes) -> Response {
    let Some(Extension(provisioner)) = provisioner else {
        return ProvisionError::Disabled.into_response();
    };
    if body.len() > MAX_REQUEST_BYTES {
        return ProvisionError::TooLarge.into_response();
    }
    let request: ProvisionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ProvisionError::BadRequest(e.to_string()).into_response(),
    };
    match provisioner.provision(&request).await {
        Ok(answer) => (StatusCode::OK, axum::Json(answer)).into_response(),
        Err(e) => e.into_response(),
    }
}
