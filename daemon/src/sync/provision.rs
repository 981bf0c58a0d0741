//! Provisioning: a kiosk trades the one-time token an administrator created
//! for it (`POST /v1/devices` on the sync server) for a client certificate,
//! the CA to trust, the broker address, the delta-signing public keys and its
//! shards. The private key is generated here and never leaves the device:
//! the server only sees a certificate signing request.
//!
//! Files written to the sync directory (mode 0700; keys 0400):
//!
//! | file | holds |
//! | --- | --- |
//! | `device.key` | the client key (PKCS#8 PEM, P-256) |
//! | `device.crt` | the client certificate (CN = device id) |
//! | `ca.pem` | the CA of the broker and of device certificates |
//! | `provisioned.json` | device id, broker, signing keys, shards and their assignment version |
//!
//! The client key also signs every uplink ([`super::state::load_signing_key`]).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use facegate_protocol::signing::{PublicKey, TrustedKeys};
use facegate_protocol::{DeviceId, ShardId};
use serde::{Deserialize, Serialize};

pub const PROVISIONED: &str = "provisioned.json";
pub const DEVICE_KEY: &str = "device.key";
pub const DEVICE_CERT: &str = "device.crt";
pub const CA: &str = "ca.pem";

/// Why provisioning or loading its result failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is already provisioned; remove the directory to provision again")]
    AlreadyProvisioned(PathBuf),
    #[error("{0} is not provisioned (run `facegate-daemon provision`)")]
    NotProvisioned(PathBuf),
    #[error("{path} is readable by others (mode {mode:04o}); chmod 0400")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("cannot make the key or the certificate request: {0}")]
    Csr(String),
    #[error("the server refused provisioning ({status}): {detail}")]
    Refused { status: u16, detail: String },
    #[error("cannot reach the server: {0}")]
    Http(String),
    #[error("the server's answer is unusable: {0}")]
    Answer(String),
}

/// The broker to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broker {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// One delta-signing public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyInfo {
    pub key_id: String,
    pub public_key_hex: String,
}

/// The server's answer to `POST /v1/provision`, as kept on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provisioned {
    pub device_id: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub mqtt: Broker,
    pub signing_keys: Vec<SigningKeyInfo>,
    pub shards: Vec<String>,
    /// The version of the assignment `shards` is (0 from a server that
    /// does not say): a pushed or proven assignment must be newer.
    #[serde(default)]
    pub assignment_version: u64,
}

impl Provisioned {
    /// Checks every field the device relies on.
    pub fn check(&self) -> Result<(DeviceId, Vec<ShardId>, TrustedKeys), ProvisionError> {
        let answer = |m: String| ProvisionError::Answer(m);
        let device = DeviceId::new(self.device_id.clone()).map_err(|e| answer(format!("device_id: {e}")))?;
        let shards = self
            .shards
            .iter()
            .map(|s| ShardId::new(s.clone()).map_err(|e| answer(format!("shard {s:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if self.signing_keys.is_empty() {
            return Err(answer("no delta-signing key".into()));
        }
        let keys = self
            .signing_keys
            .iter()
            .map(|k| {
                let bytes =
                    hex_decode(&k.public_key_hex).ok_or_else(|| answer(format!("key {}: not hex", k.key_id)))?;
                PublicKey::from_bytes(&bytes).map_err(|e| answer(format!("key {}: {e}", k.key_id)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !self.certificate_pem.contains("BEGIN CERTIFICATE") || !self.ca_pem.contains("BEGIN CERTIFICATE") {
            return Err(answer("certificate_pem and ca_pem must be PEM certificates".into()));
        }
        if self.mqtt.host.is_empty() || self.mqtt.port == 0 {
            return Err(answer("mqtt.host and mqtt.port are required".into()));
        }
        Ok((device, shards, TrustedKeys::new(keys)))
    }

    /// Reads `dir/provisioned.json` and checks the key file's mode.
    pub fn load(dir: &Path) -> Result<Self, ProvisionError> {
        let path = dir.join(PROVISIONED);
        if !path.exists() {
            return Err(ProvisionError::NotProvisioned(dir.to_path_buf()));
        }
        let text =
            std::fs::read_to_string(&path).map_err(|source| ProvisionError::Io { path: path.clone(), source })?;
        let provisioned: Self =
            serde_json::from_str(&text).map_err(|e| ProvisionError::Answer(format!("{}: {e}", path.display())))?;
        provisioned.check()?;
        let key = dir.join(DEVICE_KEY);
        let mode = std::fs::metadata(&key)
            .map_err(|source| ProvisionError::Io { path: key.clone(), source })?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ProvisionError::KeyPermissions { path: key, mode });
        }
        Ok(provisioned)
    }
}

pub(crate) fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ProvisionError> {
    let io = |source| ProvisionError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The request body, kept apart for tests.
pub fn request_body(token: &str, csr_pem: &str) -> serde_json::Value {
    serde_json::json!({ "token": token, "csr_pem": csr_pem })
}

/// A fresh P-256 key and a certificate request for it (PEM, PEM).
pub fn key_and_csr(device_hint: &str) -> Result<(String, String), ProvisionError> {
    let key = rcgen::KeyPair::generate().map_err(|e| ProvisionError::Csr(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, device_hint);
    let csr = params.serialize_request(&key).map_err(|e| ProvisionError::Csr(e.to_string()))?;
    let csr_pem = csr.pem().map_err(|e| ProvisionError::Csr(e.to_string()))?;
    Ok((key.serialize_pem(), csr_pem))
}

/// Provisions this device against `server` (an `http://` or `https://` base
/// URL; `server_ca` is the PEM to trust for https) into `dir`.
/// `owner` (uid, gid), when given, gets the directory and every file: the
/// user the service runs as, when provisioning runs as root.
pub fn provision(
    server: &str,
    token: &str,
    dir: &Path,
    server_ca: Option<&Path>,
    owner: Option<(u32, u32)>,
) -> Result<Provisioned, ProvisionError> {
    if dir.join(PROVISIONED).exists() {
        return Err(ProvisionError::AlreadyProvisioned(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir).map_err(|source| ProvisionError::Io { path: dir.to_path_buf(), source })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|source| ProvisionError::Io { path: dir.to_path_buf(), source })?;
    let (key_pem, csr_pem) = key_and_csr("facegate-device")?;

    let mut tls = ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
    if let Some(ca) = server_ca {
        let pem = std::fs::read(ca).map_err(|source| ProvisionError::Io { path: ca.to_path_buf(), source })?;
        let certs = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect::<Vec<_>>();
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let url = format!("{}/v1/provision", server.trim_end_matches('/'));
    let mut response =
        agent.post(&url).send_json(request_body(token, &csr_pem)).map_err(|e| ProvisionError::Http(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().map_err(|e| ProvisionError::Http(e.to_string()))?;
    if status != 200 {
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or(body);
        return Err(ProvisionError::Refused { status, detail });
    }
    let provisioned: Provisioned = serde_json::from_str(&body).map_err(|e| ProvisionError::Answer(e.to_string()))?;
    provisioned.check()?;
    write_file(&dir.join(DEVICE_KEY), key_pem.as_bytes(), 0o400)?;
    write_file(&dir.join(DEVICE_CERT), provisioned.certificate_pem.as_bytes(), 0o444)?;
    write_file(&dir.join(CA), provisioned.ca_pem.as_bytes(), 0o444)?;
    let json = serde_json::to_vec_pretty(&provisioned).map_err(|e| ProvisionError::Answer(e.to_string()))?;
    let answer = dir.join(PROVISIONED);
    // Handed over before the answer: its presence means the directory is
    // complete, and usable by the service.
    if let Some((uid, gid)) = owner {
        for path in [dir.to_path_buf(), dir.join(DEVICE_KEY), dir.join(DEVICE_CERT), dir.join(CA)] {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(|source| ProvisionError::Io { path: path.clone(), source })?;
        }
    }
    write_file(&answer, &json, 0o400)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&answer, Some(uid), Some(gid))
            .map_err(|source| ProvisionError::Io { path: answer.clone(), source })?;
    }
    Ok(provisioned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Provisioned {
        Provisioned {
            device_id: "door-1".into(),
            certificate_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\n".into(),
            mqtt: Broker { host: "localhost".into(), port: 8883, tls: true },
            signing_keys: vec![SigningKeyInfo { key_id: "k".into(), public_key_hex: "11".repeat(32) }],
            shards: vec!["lobby".into()],
            assignment_version: 4,
        }
    }

    #[test]
    fn a_complete_answer_checks_and_bad_fields_are_named() {
        let (device, shards, keys) = answer().check().unwrap();
        assert_eq!(device.as_str(), "door-1");
        assert_eq!(shards.len(), 1);
        assert!(!keys.is_empty());
        let mut bad = answer();
        bad.shards = vec!["a/b".into()];
        assert!(bad.check().unwrap_err().to_string().contains("shard"));
        let mut bad = answer();
        bad.signing_keys[0].public_key_hex = "zz".into();
        assert!(bad.check().unwrap_err().to_string().contains("not hex"));
        let mut bad = answer();
        bad.signing_keys.clear();
        assert!(bad.check().unwrap_err().to_string().contains("signing key"));
    }

    #[test]
    fn an_answer_without_an_assignment_version_is_version_0() {
        let mut json = serde_json::to_value(answer()).unwrap();
        json.as_object_mut().unwrap().remove("assignment_version");
        let provisioned: Provisioned = serde_json::from_value(json).unwrap();
        assert_eq!(provisioned.assignment_version, 0);
    }

    #[test]
    fn the_csr_is_pem_and_the_key_stays_here() {
        let (key, csr) = key_and_csr("door-1").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert!(csr.contains("BEGIN CERTIFICATE REQUEST"));
        assert!(!request_body("t", &csr).to_string().contains("PRIVATE"));
    }

    #[test]
    fn an_unprovisioned_directory_says_how_to_provision() {
        let dir = tempfile::tempdir().unwrap();
        let err = Provisioned::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("facegate-daemon provision"), "{err}");
    }
}
