//! Sync over MQTT with real components: jongodb, the embedded broker
//! (rumqttd, TLS with client certificates), the sync service, and devices
//! provisioned through `POST /v1/provision` with their own keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TestServer, database, fixture, fresh_name, test_config};
use facegate_protocol::sync::server::ServerSync;
use facegate_protocol::{
    AuditBatch, AuditEvent, DeltaBatch, DeltaOp, DeviceId, Down, DownMessage, PublicKey, ShardId, StageMillis,
    TrustedKeys, Up, UpMessage, decode_verified, encode, topics,
};
use facegate_sync_server::auth::Role;
use facegate_sync_server::sync::provision::ProvisionResponse;
use facegate_sync_server::sync::service::{client_tls, mqtt_options};
use facegate_sync_server::sync::{self, BrokerKind, SyncConfig, SyncRuntime};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event};
use serde_json::json;
use tokio::sync::mpsc;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sync_config(state: &std::path::Path, port: u16, client_id: &str) -> SyncConfig {
    SyncConfig {
        enabled: true,
        state_dir: state.to_path_buf(),
        broker: BrokerKind::Embedded,
        broker_port: port,
        embedded_listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        client_id: Some(client_id.to_string()),
        poll_interval_ms: 50,
        publisher_lease_ms: 1000,
        ..SyncConfig::default()
    }
}

/// A server with sync: the router answers `/v1/provision`.
async fn server_with_sync(uri: &str, db: &str, sync_config: &SyncConfig) -> (TestServer, SyncRuntime) {
    let mut server = TestServer::start(uri, db).await;
    let runtime = sync::start(sync_config, server.app.store.clone(), &server.app.state.readiness).await.unwrap();
    server.router = server.router.clone().layer(axum::Extension(Arc::clone(&runtime.provisioner)));
    wait_until("the sync service is connected", || server.app.state.readiness.is_ready()).await;
    (server, runtime)
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..400 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn provision(server: &TestServer, token: &str, csr_pem: &str) -> (StatusCode, serde_json::Value) {
    let request = Request::post("/v1/provision")
        .header("content-type", "application/json")
        .body(Body::from(json!({ "token": token, "csr_pem": csr_pem }).to_string()))
        .unwrap();
    server.send(request).await
}

/// A kiosk's MQTT side, provisioned like the daemon will be.
struct Device {
    id: DeviceId,
    keys: TrustedKeys,
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    subacks: mpsc::UnboundedReceiver<Vec<String>>,
    _dir: tempfile::TempDir,
}

impl Device {
    /// Creates the device through the API, provisions it, connects.
    async fn enroll(server: &TestServer, id: &str, groups: &[&str], port: u16) -> Self {
        let admin = server.token(Role::Admin);
        let (status, created) = server.json("POST", "/v1/devices", &admin, json!({ "id": id, "groups": groups })).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let token = created["provisioning_token"].as_str().unwrap().to_string();
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(vec!["ignored.example".to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let (status, body) = provision(server, &token, &csr).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: ProvisionResponse = serde_json::from_value(body).unwrap();
        assert_eq!(answer.device_id, id);
        assert_eq!(answer.mqtt.host, "localhost");
        assert!(answer.mqtt.tls);
        let mut shards = answer.shards.clone();
        shards.sort();
        let mut expected: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        expected.sort();
        assert_eq!(shards, expected);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &answer.ca_pem).unwrap();
        std::fs::write(dir.path().join("cert.pem"), &answer.certificate_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        let pinned = &answer.signing_keys[0];
        let public = PublicKey::from_bytes(&unhex(&pinned.public_key_hex)).unwrap();
        assert_eq!(public.key_id().to_string(), pinned.key_id);
        let tls =
            client_tls(&dir.path().join("ca.pem"), &dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
        Self::connect(id, TrustedKeys::new([public]), tls, port, dir).await
    }

    async fn connect(
        id: &str,
        keys: TrustedKeys,
        tls: Arc<rustls::ClientConfig>,
        port: u16,
        dir: tempfile::TempDir,
    ) -> Self {
        let options = mqtt_options(id, "localhost", port, tls);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, messages) = mpsc::unbounded_channel();
        let (sub_tx, subacks) = mpsc::unbounded_channel();
        let (up_tx, mut up_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = up_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((String::from_utf8_lossy(&p.topic).into_owned(), p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let _ = sub_tx.send(ack.return_codes.iter().map(|c| format!("{c:?}")).collect());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), up_rx.recv()).await.expect("device connects");
        Self { id: DeviceId::new(id).unwrap(), keys, client, messages, subacks, _dir: dir }
    }

    async fn subscribe(&mut self, topic: &str) {
        self.client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        let codes = tokio::time::timeout(Duration::from_secs(5), self.subacks.recv()).await.unwrap().unwrap();
        assert!(codes.iter().all(|c| c.starts_with("Success")), "{codes:?}");
    }

    async fn send_up(&self, body: Up) {
        let message = UpMessage { device: self.id.clone(), sent_at: 0, body };
        let payload = encode(&message).unwrap();
        self.client.publish(topics::device_up(&self.id), QoS::AtLeastOnce, false, payload).await.unwrap();
    }

    /// The next message on `topic`, within 10 s.
    async fn next_on(&mut self, topic: &str) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (t, payload) = tokio::time::timeout_at(deadline, self.messages.recv())
                .await
                .unwrap_or_else(|_| panic!("nothing on {topic} within 10 s"))
                .unwrap();
            if t == topic {
                return payload;
            }
        }
    }

    async fn next_down(&mut self) -> Down {
        let topic = topics::device_down(&self.id);
        let payload = self.next_on(&topic).await;
        let message: DownMessage = decode_verified(&payload, &self.keys).unwrap();
        assert_eq!(message.device, self.id);
        message.body
    }
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

fn event(device: &DeviceId, seq: u64) -> AuditEvent {
    AuditEvent {
        device: device.clone(),
        seq,
        at: 1_700_000_000_000 + seq as i64,
        decision: facegate_protocol::Decision::Unknown,
        identity: None,
        score: Some(0.2),
        liveness: facegate_protocol::LivenessVerdict::Live,
        liveness_score: None,
        reason: None,
        model_id: "test".into(),
        frames: 1,
        timings_ms: StageMillis::default(),
    }
}

async fn create_group(server: &TestServer, id: &str) {
    let (status, body) = server.json("POST", "/v1/groups", &server.token(Role::Admin), json!({ "id": id })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enrollment_reaches_a_provisioned_device_as_a_signed_delta_and_audit_is_stored_once() {
    let db = database();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, runtime) =
        server_with_sync(&db.uri, &fresh_name(), &sync_config(state.path(), port, "server-a")).await;
    create_group(&server, "lobby").await;
    let mut door = Device::enroll(&server, "door-1", &["lobby"], port).await;
    let lobby = ShardId::new("lobby").unwrap();
    door.subscribe(&topics::shard_delta(&lobby)).await;
    door.subscribe(&topics::device_down(&door.id)).await;

    let started = std::time::Instant::now();
    let (status, body) = server.enroll("Einstein", &[fixture("einstein")], &[("groups", "lobby")]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let payload = door.next_on(&topics::shard_delta(&lobby)).await;
    let batch: DeltaBatch = decode_verified(&payload, &door.keys).unwrap();
    eprintln!("enrollment → signed delta on the shard topic: {:?}", started.elapsed());
    assert_eq!((batch.base_seq, batch.seq), (0, 1));
    assert!(
        matches!(&batch.ops[0], DeltaOp::Upsert { identity, templates } if identity.name == "Einstein" && !templates.is_empty())
    );

    // A forged delta (another key) does not verify against the pinned key.
    let forger = facegate_protocol::SigningKey::from_seed(&[7; 32]).unwrap();
    let forged = facegate_protocol::encode_signed(&batch, &forger).unwrap();
    assert!(decode_verified::<DeltaBatch>(&forged, &door.keys).is_err());

    // An audit batch published twice is stored once and acknowledged each time.
    let events = vec![event(&door.id, 1), event(&door.id, 2)];
    for _ in 0..2 {
        door.send_up(Up::Audit(AuditBatch { events: events.clone() })).await;
        assert_eq!(door.next_down().await, Down::AuditAck { up_to_seq: 2 });
    }
    assert_eq!(server.app.store.count_audit().await.unwrap(), 2);
    assert_eq!(runtime.service.stats.get("audit_inserted"), 2);
    assert_eq!(runtime.service.stats.get("audit_duplicates"), 2);

    // A device behind (seq 0) asks to resync: it gets the missing deltas and the head.
    door.send_up(Up::ResyncRequest { shard: lobby.clone(), have_seq: 0 }).await;
    match door.next_down().await {
        Down::Deltas(b) => assert_eq!((b.base_seq, b.seq, b.ops.len()), (0, 1, 1)),
        other => panic!("expected deltas, got {other:?}"),
    }
    assert_eq!(door.next_down().await, Down::Head { shard: lobby.clone(), seq: 1 });
    let admin = server.token(Role::Admin);
    let (_, device) = server.get("/v1/devices/door-1", &admin).await;
    assert!(device["commands"].as_array().is_some_and(Vec::is_empty), "{device}");

    // The fleet list: how far behind each shard of each device is, against
    // the heads read once for the whole fleet; commands only in the detail.
    create_group(&server, "lab").await;
    let (status, created) =
        server.json("POST", "/v1/devices", &admin, json!({ "id": "door-2", "groups": ["lab", "lobby"] })).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, list) = server.get("/v1/devices", &admin).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let devices = list["devices"].as_array().unwrap();
    assert_eq!(devices.iter().map(|d| d["id"].as_str().unwrap()).collect::<Vec<_>>(), ["door-1", "door-2"]);
    assert_eq!(
        devices[1]["shards"],
        json!([
            { "shard": "lab", "head_seq": 0, "applied_seq": null, "behind": 0 },
            { "shard": "lobby", "head_seq": 1, "applied_seq": null, "behind": 1 },
        ])
    );
    assert_eq!(devices[0]["shards"][0]["head_seq"], 1, "{list}");
    assert!(devices.iter().all(|d| d.get("commands").is_none()), "{list}");

    // Garbage on the up topic is refused and counted, nothing stored.
    door.client.publish(topics::device_up(&door.id), QoS::AtLeastOnce, false, b"garbage".to_vec()).await.unwrap();
    let stats = Arc::clone(&runtime.service.stats);
    wait_until("the garbage is counted", || stats.get("rejected_malformed") == 1).await;
    assert_eq!(server.app.store.count_audit().await.unwrap(), 2);
    runtime.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provisioning_token_works_once_and_a_bad_csr_does_not_burn_it() {
    let db = database();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, runtime) =
        server_with_sync(&db.uri, &fresh_name(), &sync_config(state.path(), port, "server-p")).await;
    create_group(&server, "lab").await;
    let admin = server.token(Role::Admin);
    let (_, created) = server.json("POST", "/v1/devices", &admin, json!({ "id": "door-9", "groups": ["lab"] })).await;
    let token = created["provisioning_token"].as_str().unwrap().to_string();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default().serialize_request(&key).unwrap().pem().unwrap();

    let (status, body) =
        provision(&server, &token, "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
            .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = provision(&server, "not-a-token", &csr).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = provision(&server, &token, &csr).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["ca_pem", "certificate_pem", "device_id", "mqtt", "shards", "signing_keys"]);
    assert_eq!(body["mqtt"], json!({ "host": "localhost", "port": port, "tls": true }));
    assert_eq!(body["shards"], json!(["lab"]));
    let (status, body) = provision(&server, &token, &csr).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["type"], "https://facegate.invalid/problems/bad-provisioning-token");
    let request = Request::post("/v1/provision").body(Body::from("{not json")).unwrap();
    assert_eq!(server.send(request).await.0, StatusCode::BAD_REQUEST);
    runtime.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_publish_every_delta_and_lose_no_audit() {
    let db = database();
    let name = fresh_name();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, first) = server_with_sync(&db.uri, &name, &sync_config(state.path(), port, "replica-1")).await;
    // The second replica: same database, same PKI, the first one's broker.
    let second_server = TestServer::with_config(test_config(&db.uri, &name)).await;
    let second_config = SyncConfig { broker: BrokerKind::External, ..sync_config(state.path(), port, "replica-2") };
    let second =
        sync::start(&second_config, second_server.app.store.clone(), &second_server.app.state.readiness).await.unwrap();
    wait_until("the second replica is connected", || second_server.app.state.readiness.is_ready()).await;

    create_group(&server, "lobby").await;
    let mut door = Device::enroll(&server, "door-2", &["lobby"], port).await;
    let lobby = ShardId::new("lobby").unwrap();
    door.subscribe(&topics::shard_delta(&lobby)).await;
    door.subscribe(&topics::device_down(&door.id)).await;

    // Enrollments through both replicas' APIs.
    let (s1, b1) = server.enroll("Einstein", &[fixture("einstein")], &[("groups", "lobby")]).await;
    assert_eq!(s1, StatusCode::CREATED, "{b1}");
    let (s2, b2) = second_server.enroll("Obama", &[fixture("obama")], &[("groups", "lobby")]).await;
    assert_eq!(s2, StatusCode::CREATED, "{b2}");
    let mut applied = 0;
    while applied < 2 {
        let batch: DeltaBatch = decode_verified(&door.next_on(&topics::shard_delta(&lobby)).await, &door.keys).unwrap();
        if batch.seq <= applied {
            continue; // a duplicate publication is harmless
        }
        assert_eq!(batch.base_seq, applied, "a gap in the published log");
        applied = batch.seq;
    }

    // 20 audit batches of 5 events; the replicas share them.
    for b in 0..20u64 {
        let events = (1..=5).map(|i| event(&door.id, b * 5 + i)).collect();
        door.send_up(Up::Audit(AuditBatch { events })).await;
    }
    let mut acked = 0;
    while acked < 100 {
        if let Down::AuditAck { up_to_seq } = door.next_down().await {
            acked = acked.max(up_to_seq);
        }
    }
    assert_eq!(server.app.store.count_audit().await.unwrap(), 100);
    let handled = (first.service.stats.get("audit_inserted"), second.service.stats.get("audit_inserted"));
    eprintln!("audit events inserted by replica 1, 2: {handled:?}");
    assert_eq!(handled.0 + handled.1, 100);
    // The server's subscriptions are the shared one and the status topics.
    assert_eq!(ServerSync::subscriptions("facegate")[0], "$share/facegate/facegate/v1/device/+/up");
    second.service.stop().await;
    first.service.stop().await;
}
