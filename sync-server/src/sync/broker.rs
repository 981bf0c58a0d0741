//! The embedded MQTT broker of a single box: `rumqttd` behind an
//! authorizing gate.
//!
//! ```text
//! device ──TLS, client cert──▶ gate (embedded-listen) ──loopback TCP──▶ rumqttd
//!                               │ CN = identity, ACL per packet
//! ```
//!
//! - [`gate`] terminates TLS with the workspace's rustls 0.23: a client
//!   certificate from the device CA is required and checked against the
//!   revocation list of the devices revoked in the database (reloaded
//!   within [`gate::ACL_REFRESH`] of a revocation). The certificate's CN is
//!   the client's identity: the sync server ([`super::pki::SERVER_IDENTITY`])
//!   or a device.
//! - [`session`] checks each packet against [`acl::Acl`] (the device list,
//!   read again every [`gate::ACL_REFRESH`]): a device's CONNECT must carry
//!   its own id as client id (mosquitto's `use_username_as_clientid`: no
//!   session takeover), it publishes only on its own `up`/`status`,
//!   subscribes only to its own `down` and its assigned shards' `delta`
//!   topics (refused ones are answered with reason code 0x87, not
//!   authorized), and is delivered only what it may read *now*, so an
//!   assignment change takes effect on open subscriptions too. A revoked
//!   device's open connections are cut. The server may do anything under
//!   `facegate/`. Counters: `broker_*` events of [`SyncStats`].
//! - `rumqttd` (MQTT 5, built without TLS: no rustls-webpki 0.102) listens
//!   on a loopback port of its own and accepts only the gate's login (a
//!   random password made at each start), so a local process that finds
//!   the port still cannot bypass the gate.
//!
//! The demo-only plain listener (`embedded-plain-listen`) goes through the
//! gate too: with no certificate, the client id is taken as a device's id
//! (never the server's) and that device's ACL applies, so it gives no more
//! than that device's certificate would (but without proof: demos on
//! loopback only).
//!
//! Limits: sessions in memory only (a restart loses queued messages; the
//! devices resync), no way to stop it short of ending the process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::Login;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::pki::{Pki, PkiError};
use super::service::SyncStats;
use crate::store::Store;

pub mod acl;
pub mod frame;
pub mod gate;
pub mod session;

/// Largest MQTT packet the embedded broker accepts (a 1 MiB signed message
/// plus topic and headers).
pub const MAX_PACKET_BYTES: usize = 1024 * 1024 + 4096;
/// The user name the gate logs in to rumqttd with.
const GATE_USER: &str = "facegate-gate";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot start the broker thread: {0}")]
    Thread(std::io::Error),
    #[error("the embedded broker did not start listening on {0} within 10 s (port taken?)")]
    NotListening(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the system random generator failed")]
    Random,
    #[error("TLS of the MQTT gate: {0}")]
    Tls(String),
    #[error("revocation list: {0}")]
    Revocation(#[source] PkiError),
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The gate's TLS listener (devices and the server connect here).
    pub tls_listen: SocketAddr,
    /// The gate's plain listener (demos only).
    pub plain_listen: Option<SocketAddr>,
}

/// rumqttd started and the gate's listeners bound, the gate not yet serving
/// (see [`Prepared::open`]).
#[derive(Debug)]
pub struct Prepared {
    upstream: SocketAddr,
    login: Login,
    tls: std::net::TcpListener,
    plain: Option<std::net::TcpListener>,
}

fn settings(listen: SocketAddr, login: &Login) -> ServerSettings {
    ServerSettings {
        name: "facegate-gate-upstream".to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PACKET_BYTES,
            max_inflight_count: 200,
            auth: Some(HashMap::from([(login.username.clone(), login.password.clone())])),
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// The rumqttd configuration: one MQTT 5 plain listener on `listen`
/// (loopback), accepting only `login`.
pub fn broker_config(listen: SocketAddr, login: &Login) -> Config {
    let mut v5 = HashMap::new();
    v5.insert("gate".to_string(), settings(listen, login));
    Config {
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
    }
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BrokerError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| BrokerError::Listen { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| BrokerError::Listen { addr, source })?;
    Ok(listener)
}

/// Starts rumqttd on a free loopback port on its own thread, waits until
/// it accepts connections, and binds the gate's listeners (blocking).
pub fn prepare(tls_listen: SocketAddr, plain_listen: Option<SocketAddr>) -> Result<Prepared, BrokerError> {
    let tls = bind(tls_listen)?;
    let plain = plain_listen.map(bind).transpose()?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let upstream = bind(loopback)?.local_addr().map_err(|source| BrokerError::Listen { addr: loopback, source })?;
    let password = crate::crypto::random_bytes::<24>().map_err(|_| BrokerError::Random)?;
    let login = Login::new(GATE_USER, crate::crypto::hex(&password));
    let config = broker_config(upstream, &login);
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
        if std::net::TcpStream::connect_timeout(&upstream, Duration::from_millis(200)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err(BrokerError::NotListening(upstream));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Prepared { upstream, login, tls, plain })
}

impl Prepared {
    /// Reads the device list (devices are refused until it has been read
    /// once), builds the TLS configuration with the current revocation
    /// list, and starts serving: the gate's listeners and its ACL refresh
    /// run for the life of the process. Must run inside the tokio runtime.
    pub async fn open(self, store: Store, pki: Arc<Pki>, stats: Arc<SyncStats>) -> Result<EmbeddedBroker, BrokerError> {
        let devices = match tokio::time::timeout(Duration::from_secs(10), store.list_devices()).await {
            Ok(Ok(devices)) => devices,
            Ok(Err(e)) => {
                log::warn!(error:% = e; "MQTT gate: the device list cannot be read yet; devices are refused until it can");
                Vec::new()
            }
            Err(_) => {
                log::warn!("MQTT gate: the device list cannot be read yet; devices are refused until it can");
                Vec::new()
            }
        };
        let revoked = gate::revoked_of(&devices);
        let tls = gate::server_tls(&pki, &revoked)?;
        let acl = acl::Acl::from_devices(&devices);
        let gate = Arc::new(gate::Gate::new(acl, tls, stats, store.clone(), self.upstream, self.login));
        let tls_listen = self.tls.local_addr().map_err(|source| BrokerError::Listen { addr: self.upstream, source })?;
        let plain_listen = self.plain.as_ref().and_then(|p| p.local_addr().ok());
        let listener = |l: std::net::TcpListener| {
            let addr = l.local_addr().unwrap_or(tls_listen);
            tokio::net::TcpListener::from_std(l).map_err(|source| BrokerError::Listen { addr, source })
        };
        let tls_listener = listener(self.tls)?;
        let plain_listener = self.plain.map(listener).transpose()?;
        tokio::spawn(Arc::clone(&gate).accept_tls(tls_listener));
        if let Some(plain) = plain_listener {
            log::warn!(listen:% = plain_listen.unwrap_or(tls_listen);
                "the embedded broker has a plain listener (client id taken as a device's id, unproven): for demos only");
            tokio::spawn(Arc::clone(&gate).accept_plain(plain));
        }
        tokio::spawn(gate.refresh(store, pki, revoked));
        log::info!(tls:% = tls_listen, plain:? = plain_listen, devices = devices.len();
            "embedded MQTT broker listening (rumqttd, MQTT 5, behind the ACL gate)");
        Ok(EmbeddedBroker { tls_listen, plain_listen })
    }
}
