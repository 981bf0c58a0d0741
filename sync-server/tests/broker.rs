//! The embedded broker's ACL gate with real sockets and real certificates:
//! jongodb, the server's sync side (rumqttd behind the gate on
//! 127.0.0.1), devices provisioned through `POST /v1/provision` with their
//! own keys, and a device turned hostile (its own, genuine certificate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TestServer, database, fresh_name};
use facegate_protocol::{DeviceId, ShardId, topics};
use facegate_sync_server::auth::Role;
use facegate_sync_server::sync::pki::SERVER_IDENTITY;
use facegate_sync_server::sync::provision::ProvisionResponse;
use facegate_sync_server::sync::service::{client_tls, mqtt_options};
use facegate_sync_server::sync::{self, BrokerKind, SyncConfig, SyncRuntime};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet};
use rumqttc::v5::{AsyncClient, Event};
use serde_json::json;
use tokio::sync::mpsc;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What a client's event loop saw.
#[derive(Debug)]
enum Seen {
    Connected,
    Message(String),
    SubAck(Vec<String>),
    PubAck(String),
    Error(String),
}

struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Seen>,
}

impl Client {
    fn start(id: &str, port: u16, tls: Arc<rustls::ClientConfig>) -> Self {
        Self::with_options(mqtt_options(id, "localhost", port, tls))
    }

    fn with_options(options: rumqttc::v5::MqttOptions) -> Self {
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let seen = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::Connected,
                    Ok(Event::Incoming(Packet::Publish(p))) => Seen::Message(String::from_utf8_lossy(&p.topic).into()),
                    Ok(Event::Incoming(Packet::SubAck(a))) => {
                        Seen::SubAck(a.return_codes.iter().map(|c| format!("{c:?}")).collect())
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => Seen::PubAck(format!("{:?}", a.reason)),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Seen::Error(e.to_string()));
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue;
                    }
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        Self { client, events }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv()).await.expect("an event within 10 s").unwrap()
    }

    async fn connected(&mut self) {
        match self.next().await {
            Seen::Connected => {}
            other => panic!("expected a connection, got {other:?}"),
        }
    }

    /// Subscribes to `filters` in one SUBSCRIBE; the SUBACK's reason codes.
    async fn subscribe(&mut self, filters: &[&str]) -> Vec<String> {
        let filters: Vec<Filter> = filters.iter().map(|f| Filter::new(*f, QoS::AtLeastOnce)).collect();
        self.client.subscribe_many(filters).await.unwrap();
        loop {
            match self.next().await {
                Seen::SubAck(codes) => return codes,
                Seen::Message(_) => {}
                other => panic!("expected a SUBACK, got {other:?}"),
            }
        }
    }

    async fn publish(&self, topic: &str) {
        self.client.publish(topic, QoS::AtLeastOnce, false, b"payload".to_vec()).await.unwrap();
    }

    /// The next message's topic, skipping acknowledgements.
    async fn message(&mut self) -> String {
        loop {
            match self.next().await {
                Seen::Message(topic) => return topic,
                Seen::PubAck(_) | Seen::SubAck(_) => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// Every event within `wait`.
    async fn quiet_for(&mut self, wait: Duration) -> Vec<Seen> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            seen.push(event);
        }
        seen
    }
}

/// The sync server with the embedded broker; a client certificate of the
/// server's identity for observing and publishing as the server does.
async fn server(
    state: &std::path::Path,
    port: u16,
    plain: Option<u16>,
) -> (facegate_sync_server::devdb::TestDatabase, TestServer, SyncRuntime) {
    let db = database();
    let server = TestServer::start(&db.uri, &fresh_name()).await;
    let config = SyncConfig {
        enabled: true,
        state_dir: state.to_path_buf(),
        broker: BrokerKind::Embedded,
        broker_port: port,
        embedded_listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        embedded_plain_listen: plain.map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p))),
        client_id: Some("server-under-test".into()),
        poll_interval_ms: 50,
        publisher_lease_ms: 1000,
        ..SyncConfig::default()
    };
    let stats = std::sync::Arc::clone(&server.app.state.metrics.sync_events);
    let runtime = sync::start(&config, server.app.store.clone(), &server.app.state.readiness, stats).await.unwrap();
    let mut server = server;
    server.router = server.router.clone().layer(axum::Extension(Arc::clone(&runtime.provisioner)));
    for _ in 0..400 {
        if server.app.state.readiness.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(server.app.state.readiness.is_ready(), "the sync service did not connect through the gate");
    (db, server, runtime)
}

/// Registers `id` in `groups` and provisions it with a key of its own: its TLS client configuration.
async fn provision(server: &TestServer, id: &str, groups: &[&str], dir: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let admin = server.token(Role::Admin);
    let (status, created) = server.json("POST", "/v1/devices", &admin, json!({ "id": id, "groups": groups })).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["provisioning_token"].as_str().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();
    let request = Request::post("/v1/provision")
        .header("content-type", "application/json")
        .body(Body::from(json!({ "token": token, "csr_pem": csr }).to_string()))
        .unwrap();
    let (status, body) = server.send(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: ProvisionResponse = serde_json::from_value(body).unwrap();
    let files = dir.join(id);
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("ca.pem"), &answer.ca_pem).unwrap();
    std::fs::write(files.join("cert.pem"), &answer.certificate_pem).unwrap();
    std::fs::write(files.join("key.pem"), key.serialize_pem()).unwrap();
    client_tls(&files.join("ca.pem"), &files.join("cert.pem"), &files.join("key.pem")).unwrap()
}

/// A TLS configuration with a fresh certificate of the server's identity.
fn server_identity_tls(runtime: &SyncRuntime, dir: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let pair = runtime.pki.issue_client_certificate(SERVER_IDENTITY, 1).unwrap();
    std::fs::write(dir.join("observer.pem"), pair.cert_pem).unwrap();
    std::fs::write(dir.join("observer.key"), pair.key_pem).unwrap();
    client_tls(&runtime.pki.ca_path(), &dir.join("observer.pem"), &dir.join("observer.key")).unwrap()
}

async fn create_group(server: &TestServer, id: &str) {
    let (status, body) = server.json("POST", "/v1/groups", &server.token(Role::Admin), json!({ "id": id })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

const NOT_AUTHORIZED: &str = "NotAuthorized";
const GRANTED: &str = "Success(AtLeastOnce)";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_reads_and_writes_only_its_own_topics_and_cannot_take_over_another_session() {
    let state = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (port, plain_port) = (free_port(), free_port());
    let (_db, server, runtime) = server(state.path(), port, Some(plain_port)).await;
    create_group(&server, "lobby").await;
    create_group(&server, "lab").await;
    let door1_tls = provision(&server, "door-1", &["lobby"], files.path()).await;
    let door2_tls = provision(&server, "door-2", &["lobby"], files.path()).await;
    let door3_tls = provision(&server, "door-3", &["lab"], files.path()).await;
    let (door1, door3) = (DeviceId::new("door-1").unwrap(), DeviceId::new("door-3").unwrap());
    let (lobby, lab) = (ShardId::new("lobby").unwrap(), ShardId::new("lab").unwrap());
    let stats = Arc::clone(&runtime.service.stats);

    // The server's identity: subscribes to every uplink, publishes anywhere.
    let mut observer = Client::start("observer", port, server_identity_tls(&runtime, files.path()));
    observer.connected().await;
    assert_eq!(
        observer.subscribe(&["facegate/v1/device/+/up", "$share/g/facegate/v1/device/+/status"]).await,
        [GRANTED, GRANTED]
    );

    let mut one = Client::start("door-1", port, door1_tls);
    one.connected().await;
    assert_eq!(one.subscribe(&[&topics::device_down(&door1), &topics::shard_delta(&lobby)]).await, [GRANTED, GRANTED]);

    // door-3 (the lab) turned hostile, with its own genuine certificate.
    let mut three = Client::start("door-3", port, door3_tls);
    three.connected().await;
    assert_eq!(three.subscribe(&["facegate/v1/#"]).await, [NOT_AUTHORIZED]);
    assert_eq!(
        three.subscribe(&["#", "facegate/v1/shard/+/delta", "$share/x/facegate/v1/shard/lobby/delta"]).await,
        [NOT_AUTHORIZED, NOT_AUTHORIZED, NOT_AUTHORIZED]
    );
    let mixed = three
        .subscribe(&[&topics::device_down(&door3), &topics::shard_delta(&lobby), &topics::device_down(&door1)])
        .await;
    assert_eq!(mixed, [GRANTED, NOT_AUTHORIZED, NOT_AUTHORIZED], "its own down topic only");
    assert_eq!(three.subscribe(&[&topics::shard_delta(&lab)]).await, [GRANTED]);

    // The lobby's traffic reaches door-1 and nothing of it door-3.
    observer.publish(&topics::shard_delta(&lobby)).await;
    observer.publish(&topics::device_down(&door1)).await;
    observer.publish(&topics::shard_delta(&lab)).await;
    let mut got = vec![one.message().await, one.message().await];
    got.sort();
    assert_eq!(got, [topics::device_down(&door1), topics::shard_delta(&lobby)]);
    assert_eq!(three.message().await, topics::shard_delta(&lab));
    let leaked: Vec<_> = three.quiet_for(Duration::from_millis(800)).await;
    assert!(!leaked.iter().any(|s| matches!(s, Seen::Message(_))), "door-3 received {leaked:?}");

    // Publishing as door-1 is refused (PUBACK 0x87) and never reaches the server.
    three.publish(&topics::device_up(&door1)).await;
    three.publish(&topics::device_status(&door1)).await;
    three.publish(&topics::shard_delta(&lab)).await;
    three.publish(&topics::device_up(&door3)).await;
    let mut acks = Vec::new();
    while acks.len() < 4 {
        if let Seen::PubAck(reason) = three.next().await {
            acks.push(reason);
        }
    }
    assert_eq!(acks, [NOT_AUTHORIZED, NOT_AUTHORIZED, NOT_AUTHORIZED, "Success"]);
    assert_eq!(observer.message().await, topics::device_up(&door3), "the server saw a forged uplink first");
    let later = observer.quiet_for(Duration::from_millis(500)).await;
    assert!(!later.iter().any(|s| matches!(s, Seen::Message(t) if t.contains("door-1"))), "{later:?}");
    assert_eq!(stats.get("broker_acl_denied"), 6 + 3, "{:?}", stats.snapshot());

    // Session takeover: door-2's certificate with door-1's client id, again
    // and again. Each CONNECT is refused; door-1 stays connected and in sync.
    for _ in 0..5 {
        let mut thief = Client::start("door-1", port, Arc::clone(&door2_tls));
        match thief.next().await {
            Seen::Error(e) => assert!(e.contains("ClientIdentifierNotValid"), "{e}"),
            other => panic!("the takeover was let in: {other:?}"),
        }
    }
    assert!(stats.get("broker_connect_refused_client_id") >= 5, "{:?}", stats.snapshot());
    observer.publish(&topics::device_down(&door1)).await;
    assert_eq!(one.message().await, topics::device_down(&door1));
    let one_saw = one.quiet_for(Duration::from_millis(300)).await;
    assert!(
        !one_saw.iter().any(|s| matches!(s, Seen::Error(_) | Seen::Connected)),
        "door-1 was disturbed: {one_saw:?}"
    );

    // The assignment follows at once, even for a subscription made before:
    // door-3 moved from the lab to the lobby.
    let admin = server.token(Role::Admin);
    let (status, body) = server.json("PUT", "/v1/devices/door-3/groups", &admin, json!({ "groups": ["lobby"] })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dropped = stats.get("broker_delivery_dropped");
    let mut granted = Vec::new();
    for _ in 0..40 {
        granted = three.subscribe(&[&topics::shard_delta(&lobby)]).await;
        if granted == [GRANTED] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(granted, [GRANTED], "the new assignment never reached the broker ACL");
    observer.publish(&topics::shard_delta(&lab)).await;
    observer.publish(&topics::shard_delta(&lobby)).await;
    assert_eq!(three.message().await, topics::shard_delta(&lobby), "the lab's delta reached door-3 after it left");
    for _ in 0..100 {
        if stats.get("broker_delivery_dropped") > dropped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.get("broker_delivery_dropped"), dropped + 1, "{:?}", stats.snapshot());

    // The demo's plain listener gives no more than a device certificate:
    // never the server's identity, and a device's ACL.
    let plain = |id: &str| rumqttc::v5::MqttOptions::new(id, "127.0.0.1", plain_port);
    let mut posing = Client::with_options(plain(SERVER_IDENTITY));
    assert!(matches!(posing.next().await, Seen::Error(e) if e.contains("NotAuthorized")));
    drop(posing);
    let mut plain_door = Client::with_options(plain("door-2"));
    plain_door.connected().await;
    assert_eq!(plain_door.subscribe(&["facegate/v1/#", &topics::shard_delta(&lobby)]).await, [NOT_AUTHORIZED, GRANTED]);
    runtime.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_device_is_cut_off_and_cannot_connect_again_while_the_server_goes_on() {
    let state = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_db, server, runtime) = server(state.path(), port, None).await;
    create_group(&server, "lobby").await;
    let door_tls = provision(&server, "door-1", &["lobby"], files.path()).await;
    let door = DeviceId::new("door-1").unwrap();
    let stats = Arc::clone(&runtime.service.stats);
    let mut one = Client::start("door-1", port, Arc::clone(&door_tls));
    one.connected().await;
    assert_eq!(one.subscribe(&[&topics::device_down(&door)]).await, [GRANTED]);

    let (status, body) = server.json("POST", "/v1/devices/door-1/revoke", &server.token(Role::Admin), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Its open connection is cut within a refresh of the ACL…
    match tokio::time::timeout(Duration::from_secs(10), one.events.recv()).await.unwrap().unwrap() {
        Seen::Error(e) => eprintln!("door-1's connection after the revocation: {e}"),
        other => panic!("expected the connection cut, got {other:?}"),
    }
    assert_eq!(stats.get("broker_connection_cut"), 1, "{:?}", stats.snapshot());
    // … and its certificate no longer passes the TLS handshake (the CRL).
    for _ in 0..3 {
        match one.next().await {
            Seen::Error(e) => eprintln!("door-1 reconnecting: {e}"),
            other => panic!("a revoked device got back in: {other:?}"),
        }
    }
    let mut again = Client::start("door-1", port, door_tls);
    assert!(matches!(again.next().await, Seen::Error(_)));
    assert!(stats.get("broker_revoked_refused") >= 1, "{:?}", stats.snapshot());

    // The server's identity still works.
    let mut observer = Client::start("observer", port, server_identity_tls(&runtime, files.path()));
    observer.connected().await;
    assert_eq!(observer.subscribe(&[&topics::device_down(&door)]).await, [GRANTED]);
    observer.publish(&topics::device_down(&door)).await;
    assert_eq!(observer.message().await, topics::device_down(&door));
    runtime.service.stop().await;
}
