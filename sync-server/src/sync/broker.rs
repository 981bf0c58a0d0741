//! The embedded MQTT broker: `rumqttd` on threads of its own, MQTT 5, TLS
//! with client certificates checked against the device CA.
//!
//! Limits (see the [module documentation](super)): no topic ACLs, sessions
//! in memory only, no way to stop it short of ending the process. It binds
//! to loopback unless configured otherwise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig};

use super::pki::Pki;

/// Largest MQTT packet the embedded broker accepts (a 1 MiB signed message
/// plus topic and headers).
pub const MAX_PACKET_BYTES: usize = 1024 * 1024 + 4096;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("a path of the broker's TLS files is not UTF-8: {0}")]
    Path(String),
    #[error("cannot start the broker thread: {0}")]
    Thread(std::io::Error),
    #[error("the embedded broker did not start listening on {0} within 10 s (port taken?)")]
    NotListening(SocketAddr),
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    pub tls_listen: SocketAddr,
    pub plain_listen: Option<SocketAddr>,
}

fn path_text(path: &std::path::Path) -> Result<String, BrokerError> {
    path.to_str().map(str::to_string).ok_or_else(|| BrokerError::Path(path.display().to_string()))
}

fn settings(name: &str, listen: SocketAddr, tls: Option<TlsConfig>) -> ServerSettings {
    ServerSettings {
        name: name.to_string(),
        listen,
        tls,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PACKET_BYTES,
            max_inflight_count: 200,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// The broker configuration: an MQTT 5 TLS listener (client certificates
/// required) and, for demos only, a plain one.
pub fn broker_config(
    pki: &Pki,
    tls_listen: SocketAddr,
    plain_listen: Option<SocketAddr>,
) -> Result<Config, BrokerError> {
    let (cert, key) = pki.server_paths();
    let tls = TlsConfig::Rustls {
        capath: Some(path_text(&pki.ca_path())?),
        certpath: path_text(&cert)?,
        keypath: path_text(&key)?,
    };
    let mut v5 = HashMap::new();
    v5.insert("tls".to_string(), settings("facegate-mqtt-tls", tls_listen, Some(tls)));
    if let Some(plain) = plain_listen {
        v5.insert("plain".to_string(), settings("facegate-mqtt-plain", plain, None));
    }
    Ok(Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: rumqttd::Strategy::default(),
        },
        v4: None,
        v5: Some(v5),
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    })
}

/// Starts the broker on its own thread and waits until its TLS listener
/// accepts connections.
pub fn start(
    pki: &Pki,
    tls_listen: SocketAddr,
    plain_listen: Option<SocketAddr>,
) -> Result<EmbeddedBroker, BrokerError> {
    if !tls_listen.ip().is_loopback() {
        log::warn!(listen:% = tls_listen; "the embedded broker has no topic ACLs; it is listening beyond loopback");
    }
    if let Some(plain) = plain_listen {
        log::warn!(listen:% = plain; "the embedded broker has a plain (unauthenticated) listener: for demos only");
    }
    let config = broker_config(pki, tls_listen, plain_listen)?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = Broker::new(config);
            if let Err(e) = broker.start() {
                log::error!(error:% = e; "the embedded broker stopped");
            }
        })
        .map_err(BrokerError::Thread)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect_timeout(&tls_listen, Duration::from_millis(200)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening(tls_listen));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log::info!(tls:% = tls_listen, plain:? = plain_listen; "embedded MQTT broker listening (rumqttd, MQTT 5)");
    Ok(EmbeddedBroker { tls_listen, plain_listen })
}
