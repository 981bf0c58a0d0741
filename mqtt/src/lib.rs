//! The MQTT client side the kiosk daemon and the sync server share, so the
//! two ends of the sync link are built one way:
//!
//! - [`client_tls`]: a rustls client configuration (ring) that trusts only
//!   the given CA (the site's device CA, never the system roots) and
//!   presents a client certificate (a device's, or the server's);
//! - [`session_options`]: MQTT 5 options for a persistent session over that
//!   TLS (clean start off, a day of session expiry, 30 s keep-alive, a
//!   packet limit).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::MqttOptions;
use rumqttc::{TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long a broker keeps a disconnected client's session (and its QoS 1
/// messages): a day, so a kiosk offline overnight misses nothing.
pub const SESSION_EXPIRY_SECS: u32 = 24 * 3600;

/// Why a TLS client configuration could not be built; `what` names the
/// input (a file name, "the CA").
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what}: not PEM: {message}")]
    Pem { what: String, message: String },
    #[error("{what}: no certificate in the PEM")]
    NoCertificate { what: String },
    #[error("{what}: {source}")]
    Rustls {
        what: String,
        #[source]
        source: rustls::Error,
    },
}

/// A rustls client configuration trusting only the certificates of
/// `ca_pem` and authenticating with `cert_pem` (the chain) and `key_pem`.
/// `names` says what each input is in errors: `[ca, certificate, key]`.
pub fn client_tls(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    names: [&str; 3],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let [ca_name, cert_name, key_name] = names;
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(ca_pem, ca_name)? {
        roots.add(ca).map_err(|source| TlsError::Rustls { what: ca_name.to_owned(), source })?;
    }
    let chain = certificates(cert_pem, cert_name)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Pem { what: key_name.to_owned(), message: e.to_string() })?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { what: "the TLS protocol versions".to_owned(), source })?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|source| TlsError::Rustls { what: cert_name.to_owned(), source })?;
    Ok(Arc::new(config))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what: what.to_owned(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what: what.to_owned() });
    }
    Ok(certs)
}

/// MQTT 5 options for a persistent session: `client_id` at `host:port`,
/// over `tls` (plain TCP when `None`: demos on loopback only), packets up
/// to `max_packet_bytes`.
pub fn session_options(
    client_id: &str,
    host: &str,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_packet_bytes: u32,
) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_SECS))
        .set_max_packet_size(Some(max_packet_bytes))
        .set_connection_timeout(10);
    if let Some(tls) = tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_empty_pem_are_errors_naming_the_input() {
        let names = ["ca.pem", "device.pem", "device.key"];
        let err = client_tls(b"", b"", b"", names).unwrap_err();
        assert_eq!(err.to_string(), "ca.pem: no certificate in the PEM");
        let broken = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        let err = client_tls(broken, b"", b"", names).unwrap_err();
        assert!(err.to_string().starts_with("ca.pem: not PEM"), "{err}");
    }

    #[test]
    fn a_persistent_session_is_asked_for() {
        let options = session_options("door-1", "localhost", 8883, None, 4 << 20);
        assert!(!options.clean_start());
        assert_eq!(options.session_expiry_interval(), Some(SESSION_EXPIRY_SECS));
        assert_eq!(options.keep_alive(), Duration::from_secs(30));
        assert_eq!(options.client_id(), "door-1");
    }
}
