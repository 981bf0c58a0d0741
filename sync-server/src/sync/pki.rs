//! The server's keys and certificates for sync, kept in the state directory
//! and created on first start:
//!
//! | file | what |
//! | --- | --- |
//! | `ca.pem`, `ca.key` | the device CA: signs device certificates and the MQTT server certificate |
//! | `mqtt-server.pem`, `mqtt-server.key` | the broker's TLS certificate (DNS names: `localhost`, the broker host, configured names) |
//! | `server-client.pem`, `server-client.key` | this server's own MQTT client certificate (CN [`SERVER_IDENTITY`]) |
//! | `signing.pk8` | the Ed25519 key every server → device payload is signed with (PKCS#8) |
//! | `signing.previous.pk8` | after a rollover ([`rotate_signing_key`]): the key devices provisioned before it still trust |
//!
//! # Signing-key rollover
//!
//! `facegate-sync-server sync rotate-signing-key --config …` moves
//! `signing.pk8` to `signing.previous.pk8` and makes a new `signing.pk8`;
//! copy both to every replica's state directory and restart the replicas.
//! They then sign with the new key and send every device whose status says
//! it still trusts the previous key a `KeyRollover` naming the new one,
//! signed by the previous key (which the device trusts), so no device is
//! provisioned again. Keep `signing.previous.pk8` until every device's
//! status shows the new key id (`GET /v1/devices`, `trusted_key`); a second
//! rotation before then needs `--force` and leaves the devices still on the
//! oldest key to be provisioned again.
//! Private keys are written mode 0400, each file atomically (a replica
//! racing another on first start keeps whichever key landed first).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use facegate_protocol::{DeviceId, SigningKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};

/// Common name of the server's own MQTT client certificate. It contains a
/// `:`, which no device id may, so no device can be issued this identity
/// (mosquitto uses the CN as the user name in its ACL).
pub const SERVER_IDENTITY: &str = "facegate:server";

/// Why the PKI could not be loaded or a certificate issued.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("signing key: {0}")]
    Key(#[from] facegate_protocol::KeyError),
    #[error("the certificate signing request is not valid PEM/DER or its signature does not verify: {0}")]
    BadCsr(rcgen::Error),
    #[error("the certificate signing request is larger than {0} bytes")]
    CsrTooLarge(usize),
    #[error("the system random generator failed")]
    Random,
    #[error("{0} exists: devices may still trust that key (pass --force to drop it)")]
    PreviousKeyKept(PathBuf),
}

/// Largest CSR accepted, in bytes of PEM.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// The loaded PKI.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    signing_pkcs8: Vec<u8>,
    signing_public: facegate_protocol::PublicKey,
    /// The key before the last rollover, while it is kept.
    previous_pkcs8: Option<Vec<u8>>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).field("key_id", &self.signing_public.key_id()).finish()
    }
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct CertifiedKeyPem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    /// Loads the PKI from `dir`, creating what is missing. `server_names`
    /// are extra DNS names of the MQTT server certificate (used only when it
    /// is created).
    pub fn load_or_create(dir: &Path, server_names: &[String]) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_path_buf(), source })?;
        // CA: the key first (atomic), then the certificate by whoever made the key.
        let ca_key_path = dir.join("ca.key");
        let ca_cert_path = dir.join("ca.pem");
        let made_key = write_once(&ca_key_path, 0o400, || Ok(KeyPair::generate()?.serialize_pem().into_bytes()))?;
        let ca_key = KeyPair::from_pem(&read_text(&ca_key_path)?)
            .map_err(|e| PkiError::Corrupt { path: ca_key_path.clone(), message: e.to_string() })?;
        if made_key {
            let params = ca_params()?;
            let cert = params.self_signed(&ca_key)?;
            write_once(&ca_cert_path, 0o444, || Ok(cert.pem().into_bytes()))?;
        }
        let ca_pem = wait_for_text(&ca_cert_path)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
            .map_err(|e| PkiError::Corrupt { path: ca_cert_path.clone(), message: e.to_string() })?;

        let signing_path = dir.join("signing.pk8");
        write_once(&signing_path, 0o400, || Ok(SigningKey::generate_pkcs8()?))?;
        let signing_pkcs8 =
            std::fs::read(&signing_path).map_err(|source| PkiError::Io { path: signing_path.clone(), source })?;
        let signing_public = SigningKey::from_pkcs8(&signing_pkcs8)
            .map_err(|e| PkiError::Corrupt { path: signing_path.clone(), message: e.to_string() })?
            .public_key();

        let previous_path = dir.join(PREVIOUS_SIGNING_KEY);
        let previous_pkcs8 = match std::fs::read(&previous_path) {
            Ok(bytes) => {
                SigningKey::from_pkcs8(&bytes)
                    .map_err(|e| PkiError::Corrupt { path: previous_path.clone(), message: e.to_string() })?;
                Some(bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(PkiError::Io { path: previous_path, source }),
        };

        let pki = Self { dir: dir.to_path_buf(), ca_pem, issuer, signing_pkcs8, signing_public, previous_pkcs8 };
        let mut names = vec!["localhost".to_string()];
        for n in server_names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        pki.ensure_pair("mqtt-server", || pki.issue_server_certificate(&names))?;
        pki.ensure_pair("server-client", || pki.issue_own_client_certificate())?;
        Ok(pki)
    }

    /// Writes `{name}.key` and `{name}.pem` from `make` unless they exist.
    fn ensure_pair(
        &self,
        name: &str,
        make: impl FnOnce() -> Result<CertifiedKeyPem, PkiError>,
    ) -> Result<(), PkiError> {
        let key_path = self.dir.join(format!("{name}.key"));
        let cert_path = self.dir.join(format!("{name}.pem"));
        if key_path.exists() && cert_path.exists() {
            return Ok(());
        }
        let pair = make()?;
        // The certificate names the key: write both under temporary names,
        // then the certificate last, so a reader seeing it finds the key.
        let _ = std::fs::remove_file(&key_path);
        write_once(&key_path, 0o400, || Ok(pair.key_pem.into_bytes()))?;
        write_once(&cert_path, 0o444, || Ok(pair.cert_pem.into_bytes()))?;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The device CA certificate (PEM): trust anchor of devices and broker.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// (certificate, key) of the MQTT server.
    pub fn server_paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("mqtt-server.pem"), self.dir.join("mqtt-server.key"))
    }

    /// (certificate, key) of this server's MQTT client.
    pub fn client_paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("server-client.pem"), self.dir.join("server-client.key"))
    }

    /// The delta-signing key.
    pub fn signing_key(&self) -> Result<SigningKey, PkiError> {
        Ok(SigningKey::from_pkcs8(&self.signing_pkcs8)?)
    }

    pub fn signing_public_key(&self) -> &facegate_protocol::PublicKey {
        &self.signing_public
    }

    /// The signing key before the last rollover, while it is kept.
    pub fn previous_signing_key(&self) -> Result<Option<SigningKey>, PkiError> {
        Ok(self.previous_pkcs8.as_deref().map(SigningKey::from_pkcs8).transpose()?)
    }

    /// Certifies the key of `csr_pem` as `device` (CN = the device id, client
    /// authentication only) with serial number `serial` (from
    /// [`new_serial`], recorded beforehand so it can be revoked). Whatever
    /// subject or names the request asks for are ignored.
    pub fn issue_device_certificate(
        &self,
        device: &DeviceId,
        csr_pem: &str,
        days: u32,
        serial: &[u8],
    ) -> Result<String, PkiError> {
        let csr = parse_csr(csr_pem)?;
        let mut params = leaf_params(device.as_str(), days)?;
        params.serial_number = Some(SerialNumber::from_slice(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }

    /// The device CA's certificate revocation list naming `revoked`, PEM.
    /// Valid for ten years: a broker refuses every client once its CRL has
    /// expired, and the list is rewritten with each ACL anyway.
    pub fn revocation_list_pem(&self, revoked: &[Revoked]) -> Result<String, PkiError> {
        let day = |ms: i64| {
            let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
            rcgen::date_time_ymd(y, m, d)
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let now_ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        let params = CertificateRevocationListParams {
            this_update: day(now_ms - 86_400_000),
            next_update: day(now_ms + 3650 * 86_400_000),
            // Increases with every list written (one per second at most).
            crl_number: SerialNumber::from(now.as_secs().to_be_bytes().to_vec()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&r.serial),
                    revocation_time: day(r.at_ms),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// A fresh key and certificate for a client named `common_name` (tests,
    /// benches and simulated kiosks).
    pub fn issue_client_certificate(&self, common_name: &str, days: u32) -> Result<CertifiedKeyPem, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = leaf_params(common_name, days)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        Ok(CertifiedKeyPem { cert_pem: params.signed_by(&key, &self.issuer)?.pem(), key_pem: key.serialize_pem() })
    }

    fn issue_own_client_certificate(&self) -> Result<CertifiedKeyPem, PkiError> {
        self.issue_client_certificate(SERVER_IDENTITY, 3650)
    }

    fn issue_server_certificate(&self, names: &[String]) -> Result<CertifiedKeyPem, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = leaf_params("facegate MQTT broker", 3650)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.subject_alt_names =
            names.iter().map(|n| n.as_str().try_into().map(SanType::DnsName)).collect::<Result<_, rcgen::Error>>()?;
        Ok(CertifiedKeyPem { cert_pem: params.signed_by(&key, &self.issuer)?.pem(), key_pem: key.serialize_pem() })
    }
}

/// File name of the signing key kept after a rollover.
pub const PREVIOUS_SIGNING_KEY: &str = "signing.previous.pk8";

/// The key ids of a rollover: the previous key and the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollover {
    pub previous: facegate_protocol::KeyId,
    pub current: facegate_protocol::KeyId,
}

/// Replaces the signing key in `dir`: `signing.pk8` becomes
/// `signing.previous.pk8` and a new `signing.pk8` is made (see the module
/// documentation). Refuses while a previous key is kept, unless `force`.
/// Not safe against a concurrent rotation in the same directory.
pub fn rotate_signing_key(dir: &Path, force: bool) -> Result<Rollover, PkiError> {
    let current_path = dir.join("signing.pk8");
    let previous_path = dir.join(PREVIOUS_SIGNING_KEY);
    if previous_path.exists() && !force {
        return Err(PkiError::PreviousKeyKept(previous_path));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Io { path, source }
    };
    let current = std::fs::read(&current_path).map_err(io(&current_path))?;
    let previous = SigningKey::from_pkcs8(&current)
        .map_err(|e| PkiError::Corrupt { path: current_path.clone(), message: e.to_string() })?;
    // The new key under a temporary name first, then the old one moved
    // aside (a link, so `signing.pk8` never goes missing), then the new one
    // into place.
    let fresh_path = dir.join(format!("signing.pk8.new{}", std::process::id()));
    let _ = std::fs::remove_file(&fresh_path);
    write_once(&fresh_path, 0o400, || Ok(SigningKey::generate_pkcs8()?))?;
    let fresh = std::fs::read(&fresh_path).map_err(io(&fresh_path))?;
    let key = SigningKey::from_pkcs8(&fresh)
        .map_err(|e| PkiError::Corrupt { path: fresh_path.clone(), message: e.to_string() })?;
    let aside = dir.join(format!("signing.previous.pk8.tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&aside);
    std::fs::hard_link(&current_path, &aside).map_err(io(&aside))?;
    std::fs::rename(&aside, &previous_path).map_err(io(&previous_path))?;
    std::fs::rename(&fresh_path, &current_path).map_err(io(&current_path))?;
    Ok(Rollover { previous: previous.key_id(), current: key.key_id() })
}

/// Parses and verifies a PEM certificate signing request.
pub fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, PkiError> {
    if csr_pem.len() > MAX_CSR_BYTES {
        return Err(PkiError::CsrTooLarge(MAX_CSR_BYTES));
    }
    CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::BadCsr)
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "facegate device CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, 365 * 20);
    Ok(params)
}

/// End-entity parameters: CN only (no organisation: rumqttd would read it
/// as a tenant and prefix the client's topics), a random serial, validity
/// from yesterday for `days` days.
fn leaf_params(common_name: &str, days: u32) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, days);
    Ok(params)
}

/// Valid from yesterday until `days` from today (whole days, UTC).
fn set_validity(params: &mut CertificateParams, days: u32) {
    let today =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0)
            as i64;
    let (y, m, d) = civil_from_days(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_from_days(today + i64::from(days));
    params.not_after = rcgen::date_time_ymd(y, m, d);
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

/// A random positive 16-byte serial number.
fn random_serial() -> Result<SerialNumber, PkiError> {
    Ok(SerialNumber::from_slice(&new_serial()?))
}

/// A random positive 16-byte certificate serial number.
pub fn new_serial() -> Result<[u8; 16], PkiError> {
    let mut bytes = crate::crypto::random_bytes::<16>().map_err(|_| PkiError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(bytes)
}

/// A revoked certificate: its serial number and when it was revoked (Unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub serial: Vec<u8>,
    pub at_ms: i64,
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io { path: path.to_path_buf(), source })
}

/// Reads `path`, waiting up to 10 s for another process to finish writing it.
fn wait_for_text(path: &Path) -> Result<String, PkiError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match std::fs::read_to_string(path) {
            Ok(text) => return Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => return Err(PkiError::Io { path: path.to_path_buf(), source }),
        }
    }
}

/// Creates `path` with `mode` and the bytes from `make`, atomically, unless
/// it exists. Returns whether this call created it.
fn write_once(path: &Path, mode: u32, make: impl FnOnce() -> Result<Vec<u8>, PkiError>) -> Result<bool, PkiError> {
    if path.exists() {
        return Ok(false);
    }
    let io = |source| PkiError::Io { path: path.to_path_buf(), source };
    let bytes = make()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn a_device_certificate_names_the_device_whatever_the_csr_asks() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &["broker.example".into()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "kiosk-2");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let device = DeviceId::new("kiosk-1").unwrap();
        let serial = new_serial().unwrap();
        let pem = pki.issue_device_certificate(&device, &csr, 30, &serial).unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.raw_serial(), serial.as_slice());
        let cn: Vec<_> = cert.subject().iter_common_name().map(|c| c.as_str().unwrap().to_string()).collect();
        assert_eq!(cn, vec!["kiosk-1".to_string()]);
        assert!(cert.subject_alternative_name().unwrap().is_none());
        // Loading again keeps the same CA and signing key; private keys are 0400.
        let again = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(again.ca_pem(), pki.ca_pem());
        assert_eq!(again.signing_public_key(), pki.signing_public_key());
        for f in ["ca.key", "signing.pk8", "mqtt-server.key", "server-client.key"] {
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o400, "{f}");
        }
        assert!(matches!(pki.issue_device_certificate(&device, "garbage", 30, &serial), Err(PkiError::BadCsr(_))));
    }

    #[test]
    fn a_rotation_keeps_the_old_key_as_previous_and_refuses_to_drop_it_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert!(pki.previous_signing_key().unwrap().is_none());
        let old = pki.signing_public_key().key_id();
        let rollover = rotate_signing_key(dir.path(), false).unwrap();
        assert_eq!(rollover.previous, old);
        assert_ne!(rollover.current, old);
        let again = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(again.signing_public_key().key_id(), rollover.current);
        assert_eq!(again.previous_signing_key().unwrap().unwrap().key_id(), old);
        assert!(matches!(rotate_signing_key(dir.path(), false), Err(PkiError::PreviousKeyKept(_))));
        let second = rotate_signing_key(dir.path(), true).unwrap();
        assert_eq!(second.previous, rollover.current);
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert!(names.iter().all(|n| !n.contains(".tmp") && !n.contains(".new")), "{names:?}");
    }

    #[test]
    fn the_revocation_list_is_signed_by_the_ca_and_names_each_revoked_serial() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let revoked = [
            Revoked { serial: new_serial().unwrap().to_vec(), at_ms: 1_790_000_000_000 },
            Revoked { serial: new_serial().unwrap().to_vec(), at_ms: 1_790_100_000_000 },
        ];
        let pem = pki.revocation_list_pem(&revoked).unwrap();
        let der = rustls::pki_types::CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
        use x509_parser::prelude::FromDer;
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
        let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        crl.verify_signature(ca.public_key()).unwrap();
        let serials: Vec<&[u8]> = crl.iter_revoked_certificates().map(|r| r.raw_serial()).collect();
        assert_eq!(serials, vec![revoked[0].serial.as_slice(), revoked[1].serial.as_slice()]);
        assert!(crl.next_update().is_some_and(|next| next > crl.last_update()));
        assert!(pki.revocation_list_pem(&[]).unwrap().contains("BEGIN X509 CRL"));
    }
}
