//! The mosquitto configuration `facegate-sync-server mosquitto` generates
//! from the database, run by the real `mosquitto -c FILE` (Debian package
//! `mosquitto`, installed by tests/setup.sh) on a free loopback port: TLS
//! with client certificates, a revocation list and per-device ACLs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{database, fresh_name};
use facegate_protocol::{DeviceId, ShardId, topics};
use facegate_sync_server::auth::Role;
use facegate_sync_server::engine::{Actor, action};
use facegate_sync_server::store::{GroupDoc, Store, now_millis};
use facegate_sync_server::sync::mosquitto::running_as_root;
use facegate_sync_server::sync::pki::{Pki, SERVER_IDENTITY};
use facegate_sync_server::sync::service::{client_tls, mqtt_options};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event};
use tokio::sync::mpsc;

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

enum Seen {
    Connected,
    Message(String),
    SubAck(Vec<String>),
    Error(String),
}

/// A client with `name`'s certificate (or none); its events on a channel.
fn client(
    pki: &Pki,
    dir: &std::path::Path,
    name: &str,
    port: u16,
    with_cert: bool,
) -> (AsyncClient, mpsc::UnboundedReceiver<Seen>) {
    let tls = if with_cert {
        let pair = pki.issue_client_certificate(name, 1).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, pair.cert_pem).unwrap();
        std::fs::write(&key, pair.key_pem).unwrap();
        client_tls(&pki.ca_path(), &cert, &key).unwrap()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        roots.add(rustls::pki_types::CertificateDer::from_pem_file(pki.ca_path()).unwrap()).unwrap();
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    };
    connect(name, port, tls)
}

/// An MQTT client named `name` with `tls`; its events on a channel.
fn connect(name: &str, port: u16, tls: Arc<rustls::ClientConfig>) -> (AsyncClient, mpsc::UnboundedReceiver<Seen>) {
    let (client, mut eventloop) = AsyncClient::new(mqtt_options(&name.replace(':', "-"), "localhost", port, tls), 64);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let seen = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::Connected,
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    Seen::Message(String::from_utf8_lossy(&p.topic).into_owned())
                }
                Ok(Event::Incoming(Packet::SubAck(a))) => {
                    Seen::SubAck(a.return_codes.iter().map(|c| format!("{c:?}")).collect())
                }
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(Seen::Error(e.to_string()));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    (client, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an event within 10 s").unwrap()
}

async fn connected(rx: &mut mpsc::UnboundedReceiver<Seen>) {
    match next(rx).await {
        Seen::Connected => {}
        Seen::Error(e) => panic!("connection failed: {e}"),
        _ => panic!("expected a connection"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_refuses_certless_and_revoked_clients_and_keeps_devices_to_their_own_topics() {
    let Ok(path) = which_mosquitto() else {
        panic!("mosquitto is not installed: run tests/setup.sh (Debian package mosquitto)");
    };
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let a = DeviceId::new("kiosk-a").unwrap();
    let b = DeviceId::new("kiosk-b").unwrap();
    let lobby = ShardId::new("lobby").unwrap();

    // The site's devices, registered as an operator does: A at the lobby, B
    // with no group, C at the lobby, provisioned, then revoked (left out of
    // the ACL, its certificate in the revocation list).
    let db = database();
    let db_name = fresh_name();
    let store = Store::connect(&db.uri, &db_name, 2, Duration::from_secs(10), None).await.unwrap();
    store.init().await.unwrap();
    let admin = Actor { name: "test".into(), role: Role::Admin };
    let note = |what: &str| action(&admin, what, None, "ok", mongodb::bson::Document::new());
    let group = GroupDoc { id: "lobby".into(), name: "Lobby".into(), description: None, created_at: now_millis() };
    store.create_group(&group, &note("group.create")).await.unwrap();
    let state_dir = dir.path().join("pki");
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[mongodb]\nuri = \"{}\"\ndatabase = \"{db_name}\"\n\n[sync]\nstate-dir = \"{}\"\n",
            db.uri,
            state_dir.display()
        ),
    )
    .unwrap();
    let server_command = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_facegate-sync-server"))
            .args(["--config", config.to_str().unwrap()])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let mut tokens = Vec::new();
    for (id, groups) in [("kiosk-a", "lobby"), ("kiosk-b", ""), ("kiosk-c", "lobby")] {
        let out = server_command(&["devices", "add", id, "--groups", groups]);
        assert!(out.status.success(), "devices add {id}: {}", String::from_utf8_lossy(&out.stderr));
        let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let token = added["provisioning_token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("fgp_"), "{added}");
        tokens.push(token);
    }
    let out = server_command(&["devices", "add", "kiosk-d", "--groups", "no-such-group"]);
    assert_eq!(out.status.code(), Some(65), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-group"));
    let out = server_command(&["devices", "add", "kiosk-a", "--groups", "lobby"]);
    assert_eq!(out.status.code(), Some(65), "a second kiosk-a: {}", String::from_utf8_lossy(&out.stderr));
    let out = server_command(&["devices", "add", "bad/id"]);
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    // kiosk-c is provisioned as `POST /v1/provision` does it (the token
    // redeemed with the certificate's serial, then the certificate issued).
    let pki = Pki::load_or_create(&state_dir, &["localhost".into()]).unwrap();
    let c = DeviceId::new("kiosk-c").unwrap();
    let c_key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&c_key).unwrap();
    let serial = facegate_sync_server::sync::pki::new_serial().unwrap();
    let token_hash =
        facegate_sync_server::crypto::hex(ring::digest::digest(&ring::digest::SHA256, tokens[2].as_bytes()).as_ref());
    let hex_serial = facegate_sync_server::crypto::hex(&serial);
    store
        .redeem_provisioning_token(&token_hash, &hex_serial, c_key.public_key_raw())
        .await
        .unwrap()
        .expect("kiosk-c's token");
    let c_cert = pki.issue_device_certificate(&c, &csr.pem().unwrap(), 1, &serial).unwrap();
    let c_files = dir.path().join("kiosk-c");
    std::fs::create_dir_all(&c_files).unwrap();
    std::fs::write(c_files.join("cert.pem"), c_cert).unwrap();
    std::fs::write(c_files.join("key.pem"), c_key.serialize_pem()).unwrap();
    let c_tls = client_tls(&pki.ca_path(), &c_files.join("cert.pem"), &c_files.join("key.pem")).unwrap();
    store.revoke_device("kiosk-c", &note("device.revoke")).await.unwrap();

    let broker_dir = dir.path().join("mosquitto");
    // mosquitto drops root to its own user: it is given the files, and the way in.
    let user = if running_as_root() { "mosquitto" } else { "" };
    let listen = format!("127.0.0.1:{port}");
    let out =
        server_command(&["mosquitto", "--out", broker_dir.to_str().unwrap(), "--listen", &listen, "--user", user]);
    assert!(out.status.success(), "facegate-sync-server mosquitto: {}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["devices"], 2, "{summary}");
    assert_eq!(summary["revoked_certificates"], 1, "{summary}");
    let acl = std::fs::read_to_string(broker_dir.join("acl")).unwrap();
    assert!(acl.contains("user kiosk-a\ntopic read facegate/v1/shard/lobby/delta"), "{acl}");
    assert!(!acl.contains("kiosk-c"), "a revoked device is in the ACL:\n{acl}");
    if running_as_root() {
        let (uid, gid) = facegate_sync_server::sync::mosquitto::system_user("mosquitto").unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    }
    let conf = broker_dir.join("mosquitto.conf");
    let child = Command::new(path).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().unwrap();
    let _broker = Broker(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let clients = tempfile::tempdir().unwrap();

    // No client certificate: refused.
    let (_anonymous, mut anonymous_events) = client(&pki, clients.path(), "anonymous", port, false);
    match next(&mut anonymous_events).await {
        Seen::Error(e) => eprintln!("cert-less client refused: {e}"),
        _ => panic!("a client without a certificate was let in"),
    }

    // kiosk-c's genuine certificate, revoked: refused at the handshake.
    let (_revoked, mut revoked_events) = connect("kiosk-c", port, c_tls);
    match next(&mut revoked_events).await {
        Seen::Error(e) => eprintln!("revoked device refused: {e}"),
        _ => panic!("a device with a revoked certificate was let in"),
    }

    let (server, mut server_events) = client(&pki, clients.path(), SERVER_IDENTITY, port, true);
    connected(&mut server_events).await;
    server.subscribe("facegate/v1/device/+/up", QoS::AtLeastOnce).await.unwrap();
    assert!(matches!(next(&mut server_events).await, Seen::SubAck(c) if c[0].starts_with("Success")));
    let (device_a, mut a_events) = client(&pki, clients.path(), "kiosk-a", port, true);
    connected(&mut a_events).await;

    // A may not read B's down topic. mosquitto 2.0 (Debian's) grants the
    // subscription and enforces the ACL's read access on every delivery, so
    // the property checked is that B's message never reaches A (below), not
    // the SUBACK code.
    device_a.subscribe(topics::device_down(&b), QoS::AtLeastOnce).await.unwrap();
    match next(&mut a_events).await {
        Seen::SubAck(codes) => eprintln!("subscription to B's down answered {codes:?}"),
        _ => panic!("expected a suback"),
    }
    for topic in [topics::device_down(&a), topics::shard_delta(&lobby)] {
        device_a.subscribe(topic.clone(), QoS::AtLeastOnce).await.unwrap();
        assert!(matches!(next(&mut a_events).await, Seen::SubAck(c) if c[0].starts_with("Success")), "{topic}");
    }
    server.publish(topics::device_down(&b), QoS::AtLeastOnce, false, b"for b".to_vec()).await.unwrap();
    server.publish(topics::device_down(&a), QoS::AtLeastOnce, false, b"for a".to_vec()).await.unwrap();
    match next(&mut a_events).await {
        Seen::Message(t) => assert_eq!(t, topics::device_down(&a), "A received another device's message"),
        _ => panic!("expected A's own down message"),
    }

    // A's publish on B's up topic is dropped; on its own it arrives.
    device_a.publish(topics::device_up(&b), QoS::AtLeastOnce, false, b"forged".to_vec()).await.unwrap();
    device_a.publish(topics::device_up(&a), QoS::AtLeastOnce, false, b"mine".to_vec()).await.unwrap();
    match next(&mut server_events).await {
        Seen::Message(t) => assert_eq!(t, topics::device_up(&a), "the broker passed A's publish on B's topic"),
        _ => panic!("expected A's uplink"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(seen) = server_events.try_recv() {
        assert!(!matches!(seen, Seen::Message(ref t) if *t == topics::device_up(&b)), "B's topic got A's publish");
    }

    // B (no group) subscribes to everything: mosquitto grants the filter but
    // delivers only what B may read, so none of the lobby's deltas.
    let (device_b, mut b_events) = client(&pki, clients.path(), "kiosk-b", port, true);
    connected(&mut b_events).await;
    device_b.subscribe("facegate/v1/#", QoS::AtLeastOnce).await.unwrap();
    assert!(matches!(next(&mut b_events).await, Seen::SubAck(_)));
    server.publish(topics::shard_delta(&lobby), QoS::AtLeastOnce, false, b"lobby".to_vec()).await.unwrap();
    server.publish(topics::device_down(&b), QoS::AtLeastOnce, false, b"for b".to_vec()).await.unwrap();
    match next(&mut b_events).await {
        Seen::Message(t) => assert_eq!(t, topics::device_down(&b), "B read the lobby's delta"),
        _ => panic!("expected B's own down message"),
    }
    assert_eq!(next(&mut a_events).await.message(), Some(topics::shard_delta(&lobby)));

    // Session takeover: B's certificate with A's client id, again and
    // again. `use_username_as_clientid` makes it B's own client id, so A
    // stays connected and keeps receiving.
    for _ in 0..3 {
        let b_tls =
            client_tls(&pki.ca_path(), &clients.path().join("kiosk-b.pem"), &clients.path().join("kiosk-b.key"))
                .unwrap();
        let (_thief, mut thief_events) = connect("kiosk-a", port, b_tls);
        connected(&mut thief_events).await;
    }
    server.publish(topics::device_down(&a), QoS::AtLeastOnce, false, b"still a".to_vec()).await.unwrap();
    loop {
        match next(&mut a_events).await {
            Seen::Message(t) => {
                assert_eq!(t, topics::device_down(&a));
                break;
            }
            Seen::Error(e) => panic!("A lost its connection to a takeover: {e}"),
            Seen::Connected => panic!("A was disconnected by a takeover"),
            Seen::SubAck(_) => {}
        }
    }
}

impl Seen {
    fn message(self) -> Option<String> {
        match self {
            Seen::Message(t) => Some(t),
            _ => None,
        }
    }
}

fn which_mosquitto() -> Result<std::path::PathBuf, ()> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(())
}
