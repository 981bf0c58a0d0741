//! The gate's I/O shell: the TLS (and demo plain) listeners, the relay of
//! each accepted connection to rumqttd's loopback listener through a
//! [`Session`], and the task that keeps the ACL and the revocation list
//! current and cuts the connections of devices no longer allowed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::{Disconnect, DisconnectReasonCode, Login, Packet};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::BrokerError;
use super::acl::{Acl, Identity};
use super::frame::{self, next_frame, packet_type};
use super::session::{Action, Connect, Refusal, Session, check_connect};
use crate::store::{DeviceDoc, DeviceState, Store};
use crate::sync::pki::{Pki, Revoked};
use crate::sync::service::SyncStats;

/// How often the device list is read again.
pub const ACL_REFRESH: Duration = Duration::from_secs(2);
/// Time a client has for the TLS handshake, and then for its CONNECT.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame relayed either way (the broker's packet limit and a header).
const MAX_FRAME: usize = super::MAX_PACKET_BYTES + 8;

/// Counters (in [`SyncStats`], `facegate_sync_events_total{event=…}`).
pub const EVENT_REVOKED_REFUSED: &str = "broker_revoked_refused";
pub const EVENT_TLS_REFUSED: &str = "broker_tls_refused";
/// Followed by `_{reason}`: `_not_allowed`, `_client_id`, `_will`, `_malformed`.
pub const EVENT_CONNECT_REFUSED: &str = "broker_connect_refused";
pub const EVENT_ACL_DENIED: &str = "broker_acl_denied";
pub const EVENT_DELIVERY_DROPPED: &str = "broker_delivery_dropped";
pub const EVENT_CONNECTION_CUT: &str = "broker_connection_cut";
pub const EVENT_ACL_REFRESH_FAILED: &str = "broker_acl_refresh_failed";

/// A connection through the gate, for cutting it.
#[derive(Debug)]
struct Live {
    identity: Identity,
    cut: Arc<Notify>,
}

/// State shared by the gate's tasks.
#[derive(Debug)]
pub(super) struct Gate {
    acl: RwLock<Arc<Acl>>,
    tls: RwLock<Arc<rustls::ServerConfig>>,
    live: Mutex<HashMap<u64, Live>>,
    next_id: AtomicU64,
    stats: Arc<SyncStats>,
    store: Store,
    upstream: SocketAddr,
    login: Login,
}

impl Gate {
    pub(super) fn new(
        acl: Acl,
        tls: Arc<rustls::ServerConfig>,
        stats: Arc<SyncStats>,
        store: Store,
        upstream: SocketAddr,
        login: Login,
    ) -> Self {
        for event in [EVENT_REVOKED_REFUSED, EVENT_ACL_DENIED, EVENT_CONNECTION_CUT] {
            stats.add(event, 0);
        }
        stats.add(&format!("{EVENT_CONNECT_REFUSED}_client_id"), 0);
        Self {
            acl: RwLock::new(Arc::new(acl)),
            tls: RwLock::new(tls),
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stats,
            store,
            upstream,
            login,
        }
    }

    fn acl(&self) -> Arc<Acl> {
        self.acl.read().map(|a| Arc::clone(&a)).unwrap_or_default()
    }

    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.read().ok().map(|c| Arc::clone(&c))
    }

    /// Accepts TLS connections for ever.
    pub(super) async fn accept_tls(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    tokio::spawn(Arc::clone(&self).serve_tls(tcp, peer));
                }
                Err(e) => {
                    log::warn!(error:% = e; "the MQTT gate cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Accepts plain (demo) connections for ever.
    pub(super) async fn accept_plain(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let gate = Arc::clone(&self);
                    tokio::spawn(async move { gate.serve(tcp, None, peer).await });
                }
                Err(e) => {
                    log::warn!(error:% = e; "the MQTT gate cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn serve_tls(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let Some(config) = self.tls() else { return };
        let accepted =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_rustls::TlsAcceptor::from(config).accept(tcp)).await;
        let stream = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) if is_revoked(&e) => {
                self.stats.count(EVENT_REVOKED_REFUSED);
                log::warn!(peer:% = peer; "MQTT client with a revoked certificate refused");
                return;
            }
            Ok(Err(e)) => {
                self.stats.count(EVENT_TLS_REFUSED);
                log::info!(peer:% = peer, error:% = e; "MQTT TLS handshake failed");
                return;
            }
            Err(_) => {
                self.stats.count(EVENT_TLS_REFUSED);
                log::info!(peer:% = peer; "MQTT TLS handshake timed out");
                return;
            }
        };
        let name = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(common_name);
        let Some(name) = name else {
            self.stats.count(EVENT_TLS_REFUSED);
            log::warn!(peer:% = peer; "MQTT client certificate without a common name refused");
            return;
        };
        self.serve(stream, Some(Identity::from_common_name(&name)), peer).await;
    }

    /// Checks the CONNECT, then relays until either side closes or the
    /// connection is cut.
    async fn serve<S>(self: Arc<Self>, mut client: S, certificate: Option<Identity>, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut from_client = BytesMut::with_capacity(4096);
        let first = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut client, &mut from_client)).await {
            Ok(Ok(Some(first))) if packet_type(&first) == frame::CONNECT => first,
            _ => return,
        };
        let mut checked = check_connect(&first, certificate.as_ref(), &self.acl(), &self.login);
        if let Connect::Refuse { refusal: Refusal::NotAllowed, client_id } = &checked {
            // Provisioned since the last refresh? Ask the database about this one device.
            let id = certificate.as_ref().map_or(client_id.as_str(), Identity::name);
            if let Some(acl) = self.reread_device(id).await {
                checked = check_connect(&first, certificate.as_ref(), &acl, &self.login);
            }
        }
        let (session, client_id, connect) = match checked {
            Connect::Accept { session, client_id, frame } => (session, client_id, frame),
            Connect::Refuse { refusal, client_id } => {
                self.stats.count(&format!("{EVENT_CONNECT_REFUSED}_{}", refusal.label()));
                log::warn!(peer:% = peer, certificate = certificate.as_ref().map_or("", Identity::name),
                    client_id = client_id.as_str(), reason = refusal.label(); "MQTT connection refused");
                let _ = client.write_all(&refusal.connack()).await;
                let _ = client.flush().await;
                let _ = client.shutdown().await;
                return;
            }
        };
        let upstream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(self.upstream)).await {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(e)) => {
                log::error!(error:% = e, upstream:% = self.upstream; "the gate cannot reach the embedded broker");
                return;
            }
            Err(_) => {
                log::error!(upstream:% = self.upstream; "the gate cannot reach the embedded broker (timeout)");
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let identity = session.identity().clone();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cut = Arc::new(Notify::new());
        if let Ok(mut live) = self.live.lock() {
            live.insert(id, Live { identity: identity.clone(), cut: Arc::clone(&cut) });
        }
        log::debug!(peer:% = peer, identity = identity.name(), client_id = client_id.as_str(); "MQTT client connected through the gate");
        let ended = self.relay(client, upstream, connect, session, from_client, &cut).await;
        if let Ok(mut live) = self.live.lock() {
            live.remove(&id);
        }
        log::debug!(peer:% = peer, identity = identity.name(), reason = ended; "MQTT connection through the gate ended");
    }

    async fn relay<S>(
        &self,
        client: S,
        upstream: TcpStream,
        connect: Bytes,
        mut session: Session,
        mut from_client: BytesMut,
        cut: &Notify,
    ) -> &'static str
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut broker_read, mut broker_write) = upstream.into_split();
        if broker_write.write_all(&connect).await.is_err() {
            return "the broker closed";
        }
        let mut from_broker = BytesMut::with_capacity(8192);
        loop {
            let acl = self.acl();
            let mut actions = Vec::new();
            loop {
                match next_frame(&mut from_client, MAX_FRAME) {
                    Ok(Some(frame)) => actions.extend(session.from_client(frame, &acl)),
                    Ok(None) => break,
                    Err(_) => actions.push(Action::Close("a bad frame from the client")),
                }
                if matches!(actions.last(), Some(Action::Close(_))) {
                    break;
                }
            }
            loop {
                match next_frame(&mut from_broker, MAX_FRAME) {
                    Ok(Some(frame)) => actions.extend(session.from_broker(frame, &acl)),
                    Ok(None) => break,
                    Err(_) => actions.push(Action::Close("a bad frame from the broker")),
                }
                if matches!(actions.last(), Some(Action::Close(_))) {
                    break;
                }
            }
            if let Some(ended) = self.carry_out(session.identity(), actions, &mut client_write, &mut broker_write).await
            {
                let _ = client_write.shutdown().await;
                return ended;
            }
            from_client.reserve(8192);
            from_broker.reserve(8192);
            tokio::select! {
                () = cut.notified() => {
                    self.stats.count(EVENT_CONNECTION_CUT);
                    log::warn!(identity = session.identity().name(); "MQTT connection cut: the device is no longer allowed");
                    let disconnect = Packet::Disconnect(Disconnect {
                        reason_code: DisconnectReasonCode::NotAuthorized,
                        properties: None,
                    });
                    let mut out = BytesMut::new();
                    if disconnect.write(&mut out, None).is_ok() {
                        let _ = client_write.write_all(&out).await;
                    }
                    let _ = client_write.shutdown().await;
                    return "cut";
                }
                read = client_read.read_buf(&mut from_client) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        return "the client closed";
                    }
                }
                read = broker_read.read_buf(&mut from_broker) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        let _ = client_write.shutdown().await;
                        return "the broker closed";
                    }
                }
            }
        }
    }

    /// Carries out `actions`; why the connection ends, if it does.
    async fn carry_out<C, B>(
        &self,
        identity: &Identity,
        actions: Vec<Action>,
        client: &mut C,
        broker: &mut B,
    ) -> Option<&'static str>
    where
        C: AsyncWrite + Unpin,
        B: AsyncWrite + Unpin,
    {
        let mut wrote_client = false;
        let mut ended = None;
        for action in actions {
            match action {
                Action::ToBroker(frame) => {
                    if broker.write_all(&frame).await.is_err() {
                        ended = Some("the broker closed");
                        break;
                    }
                }
                Action::ToClient(frame) => {
                    if client.write_all(&frame).await.is_err() {
                        ended = Some("the client closed");
                        break;
                    }
                    wrote_client = true;
                }
                Action::Denied { operation, topic } => {
                    self.stats.count(EVENT_ACL_DENIED);
                    log::warn!(identity = identity.name(), operation, topic = topic.as_str();
                        "MQTT request refused by the broker ACL");
                }
                Action::Dropped { topic } => {
                    self.stats.count(EVENT_DELIVERY_DROPPED);
                    log::info!(identity = identity.name(), topic = topic.as_str();
                        "MQTT message not delivered: the device may not read the topic now");
                }
                Action::Close(why) => {
                    log::warn!(identity = identity.name(), reason = why; "MQTT connection closed by the gate");
                    ended = Some(why);
                    break;
                }
            }
        }
        if wrote_client && client.flush().await.is_err() {
            return Some("the client closed");
        }
        ended
    }

    /// Reads the device list every [`ACL_REFRESH`] for ever: a new ACL, a
    /// new revocation list for the TLS handshake when it changed, and
    /// every connection no longer allowed cut. A failed read keeps the last
    /// ACL (counted and logged).
    pub(super) async fn refresh(self: Arc<Self>, store: Store, pki: Arc<Pki>, mut revoked: Vec<Revoked>) {
        loop {
            tokio::time::sleep(ACL_REFRESH).await;
            match store.list_devices().await {
                Ok(devices) => {
                    let now = revoked_of(&devices);
                    if now != revoked {
                        match server_tls(&pki, &now) {
                            Ok(config) => {
                                if let Ok(mut tls) = self.tls.write() {
                                    *tls = config;
                                }
                                log::info!(revoked = now.len(); "MQTT gate: revocation list reloaded");
                                revoked = now;
                            }
                            Err(e) => {
                                self.stats.count(EVENT_ACL_REFRESH_FAILED);
                                log::error!(error:% = e; "MQTT gate: the revocation list cannot be rebuilt");
                            }
                        }
                    }
                    self.replace_acl(Acl::from_devices(&devices));
                }
                Err(e) => {
                    self.stats.count(EVENT_ACL_REFRESH_FAILED);
                    log::warn!(error:% = e; "MQTT gate: the device list cannot be read; keeping the last ACL");
                }
            }
        }
    }

    /// Reads one device again and installs the ACL with its entry; `None`
    /// when it is not in the database (or the database does not answer).
    async fn reread_device(&self, id: &str) -> Option<Arc<Acl>> {
        let device = match self.store.device(id).await {
            Ok(Some(device)) => device,
            Ok(None) => return None,
            Err(e) => {
                log::warn!(error:% = e, device = id; "MQTT gate: cannot read a connecting device");
                return None;
            }
        };
        let acl = self.acl().with_device(&device);
        self.replace_acl(acl);
        Some(self.acl())
    }

    /// Installs `acl` and cuts the connections it no longer allows.
    pub(super) fn replace_acl(&self, acl: Acl) {
        if let Ok(live) = self.live.lock() {
            for connection in live.values() {
                if !acl.may_connect(&connection.identity) {
                    connection.cut.notify_one();
                }
            }
        }
        if let Ok(mut current) = self.acl.write() {
            *current = Arc::new(acl);
        }
    }
}

/// The revoked certificates among `devices`, in list order.
pub(super) fn revoked_of(devices: &[DeviceDoc]) -> Vec<Revoked> {
    devices
        .iter()
        .filter(|d| d.state == DeviceState::Revoked)
        .filter_map(|d| {
            let serial = crate::crypto::unhex(d.certificate_serial.as_deref()?)?;
            Some(Revoked { serial, at_ms: d.revoked_at.unwrap_or(0) })
        })
        .collect()
}

/// The gate's TLS: the MQTT server certificate, client certificates
/// required, verified against the device CA and its revocation list of
/// `revoked` (rustls 0.23 and its rustls-webpki 0.103).
pub(super) fn server_tls(pki: &Pki, revoked: &[Revoked]) -> Result<Arc<rustls::ServerConfig>, BrokerError> {
    let tls = |what: &str, e: &dyn std::fmt::Display| BrokerError::Tls(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
        roots.add(ca.map_err(|e| tls("device CA", &e))?).map_err(|e| tls("device CA", &e))?;
    }
    let crl_pem = pki.revocation_list_pem(revoked).map_err(BrokerError::Revocation)?;
    let crl = CertificateRevocationListDer::from_pem_slice(crl_pem.as_bytes()).map_err(|e| tls("CRL", &e))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .with_crls([crl])
        .build()
        .map_err(|e| tls("client verifier", &e))?;
    let (cert_path, key_path) = pki.server_paths();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| tls(&cert_path.display().to_string(), &e))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| tls(&key_path.display().to_string(), &e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls("protocol versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls("server certificate", &e))?;
    Ok(Arc::new(config))
}

/// The first common name of a DER certificate's subject.
fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let name = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}

/// Whether a failed handshake failed on a revoked client certificate.
fn is_revoked(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)))
}

/// Reads until `buf` holds a whole frame; `None` when the stream ends first.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> std::io::Result<Option<Bytes>> {
    loop {
        if let Some(frame) = next_frame(buf, MAX_FRAME).map_err(std::io::Error::other)? {
            return Ok(Some(frame));
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}
