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
    AuditBatch, AuditEvent, DeltaBatch, DeltaOp, DeviceId, DeviceSigningKey, DeviceStatus, Down, DownMessage,
    PublicKey, ShardId, ShardProgress, StageMillis, TrustedKeys, Up, UpMessage, decode_verified, encode_device_signed,
    topics,
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
    let stats = std::sync::Arc::clone(&server.app.state.metrics.sync_events);
    let runtime = sync::start(sync_config, server.app.store.clone(), &server.app.state.readiness, stats).await.unwrap();
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
    /// The key of its certificate: signs its uplinks.
    signer: DeviceSigningKey,
    /// What provisioning answered.
    answer: ProvisionResponse,
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
        let signer = DeviceSigningKey::from_pkcs8(&key.serialize_der()).unwrap();
        Self::connect(id, TrustedKeys::new([public]), signer, answer, tls, port, dir).await
    }

    async fn connect(
        id: &str,
        keys: TrustedKeys,
        signer: DeviceSigningKey,
        answer: ProvisionResponse,
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
        Self { id: DeviceId::new(id).unwrap(), keys, signer, answer, client, messages, subacks, _dir: dir }
    }

    async fn subscribe(&mut self, topic: &str) {
        self.client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        let codes = tokio::time::timeout(Duration::from_secs(5), self.subacks.recv()).await.unwrap().unwrap();
        assert!(codes.iter().all(|c| c.starts_with("Success")), "{codes:?}");
    }

    async fn send_up(&self, body: Up) {
        self.send_up_signed(body, &self.signer).await;
    }

    /// An uplink in this device's name signed by `signer` (a forgery unless
    /// it is this device's own key).
    async fn send_up_signed(&self, body: Up, signer: &DeviceSigningKey) {
        let message = UpMessage { device: self.id.clone(), sent_at: 0, body };
        let payload = encode_device_signed(&message, signer).unwrap();
        self.client.publish(topics::device_up(&self.id), QoS::AtLeastOnce, false, payload).await.unwrap();
    }

    /// A status in this device's name, signed by `signer`.
    async fn send_status(&self, status: &DeviceStatus, signer: &DeviceSigningKey) {
        let payload = encode_device_signed(status, signer).unwrap();
        self.client.publish(topics::device_status(&self.id), QoS::AtLeastOnce, false, payload).await.unwrap();
    }

    fn status(&self, assignment: u64, shards: &[(&str, u64)], trusted_key: Option<String>) -> DeviceStatus {
        DeviceStatus {
            device: self.id.clone(),
            online: true,
            at: 0,
            shards: shards
                .iter()
                .map(|(s, seq)| ShardProgress { shard: ShardId::new(*s).unwrap(), seq: *seq })
                .collect(),
            model_id: None,
            version: "test".into(),
            health: "ok".into(),
            outbox_depth: 0,
            last_command: 0,
            stale: false,
            assignment,
            trusted_key,
        }
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
        epoch: 0,
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
        assert_eq!(door.next_down().await, Down::AuditAck { epoch: 0, up_to_seq: 2 });
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
    assert_eq!(
        keys,
        ["assignment_version", "ca_pem", "certificate_pem", "device_id", "mqtt", "shards", "signing_keys"]
    );
    assert_eq!(body["assignment_version"], 0);
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
    let second = sync::start(
        &second_config,
        second_server.app.store.clone(),
        &second_server.app.state.readiness,
        std::sync::Arc::clone(&second_server.app.state.metrics.sync_events),
    )
    .await
    .unwrap();
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
        if let Down::AuditAck { up_to_seq, .. } = door.next_down().await {
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

/// Waits until `name` of the sync counters is at least `n`.
async fn counted(runtime: &SyncRuntime, name: &str, n: u64) {
    let stats = Arc::clone(&runtime.service.stats);
    let what = format!("{name} reaches {n} (counters: {:?})", stats.snapshot());
    wait_until(&what, || stats.get(name) >= n).await;
}

/// The envelope `payload` with its key id replaced by `key` (the signature stays).
fn with_key_id(payload: &[u8], key: facegate_protocol::KeyId) -> Vec<u8> {
    let value: ciborium::Value = ciborium::from_reader(payload).unwrap();
    let ciborium::Value::Map(entries) = value else { panic!("an envelope is a map") };
    let entries = entries
        .into_iter()
        .map(|(k, v)| {
            if k == ciborium::Value::Text("key".into()) { (k, ciborium::Value::Bytes(key.0.to_vec())) } else { (k, v) }
        })
        .collect();
    let mut out = Vec::new();
    ciborium::into_writer(&ciborium::Value::Map(entries), &mut out).unwrap();
    out
}

/// Enrolls `name` into `groups`; returns the identity id.
async fn enroll(server: &TestServer, name: &str, photo: &str, groups: &str) -> String {
    let (status, body) = server.enroll(name, &[fixture(photo)], &[("groups", groups)]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn erasure(server: &TestServer, identity: &str) -> serde_json::Value {
    let (status, body) = server.get(&format!("/v1/identities/{identity}/erasure"), &server.token(Role::Admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_uplinks_are_refused_and_never_make_an_erasure_look_complete() {
    let db = database();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, runtime) =
        server_with_sync(&db.uri, &fresh_name(), &sync_config(state.path(), port, "server-f")).await;
    create_group(&server, "lobby").await;
    let mut door = Device::enroll(&server, "door-a", &["lobby"], port).await;
    let victim = Device::enroll(&server, "door-b", &["lobby"], port).await;
    door.subscribe(&topics::device_down(&door.id)).await;
    let person = enroll(&server, "Einstein", "einstein", "lobby").await;
    let (status, body) = server
        .send(
            Request::delete(format!("/v1/identities/{person}"))
                .header("authorization", format!("Bearer {}", server.token(Role::Admin)))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let remove_seq = erasure(&server, &person).await["devices"][0]["remove_seq"].as_u64().unwrap();

    // door-a signs messages in door-b's name: refused, nothing recorded.
    victim.send_up_signed(Up::Applied { shard: ShardId::new("lobby").unwrap(), seq: remove_seq }, &door.signer).await;
    victim.send_status(&victim.status(0, &[("lobby", remove_seq)], None), &door.signer).await;
    counted(&runtime, "rejected_unknown_key", 2).await;
    // …and claims door-b's key id for its signature.
    let status = victim.status(0, &[("lobby", remove_seq)], None);
    let forged = with_key_id(&encode_device_signed(&status, &door.signer).unwrap(), victim.signer.key_id());
    victim.client.publish(topics::device_status(&victim.id), QoS::AtLeastOnce, false, forged).await.unwrap();
    let message = UpMessage {
        device: victim.id.clone(),
        sent_at: 0,
        body: Up::Applied { shard: ShardId::new("lobby").unwrap(), seq: remove_seq },
    };
    let forged = with_key_id(&encode_device_signed(&message, &door.signer).unwrap(), victim.signer.key_id());
    victim.client.publish(topics::device_up(&victim.id), QoS::AtLeastOnce, false, forged).await.unwrap();
    counted(&runtime, "rejected_bad_signature", 2).await;
    // Unsigned: refused too.
    let unsigned = facegate_protocol::seal_unchecked(
        facegate_protocol::Kind::Up,
        &{
            let mut body = Vec::new();
            ciborium::into_writer(
                &UpMessage {
                    device: victim.id.clone(),
                    sent_at: 0,
                    body: Up::Applied { shard: ShardId::new("lobby").unwrap(), seq: remove_seq },
                },
                &mut body,
            )
            .unwrap();
            body
        },
        None,
    )
    .unwrap();
    victim.client.publish(topics::device_up(&victim.id), QoS::AtLeastOnce, false, unsigned).await.unwrap();
    counted(&runtime, "rejected_unsigned", 1).await;
    // door-a, with its own key: a seq beyond the log's head and a shard it
    // does not serve are ignored.
    door.send_up(Up::Applied { shard: ShardId::new("lobby").unwrap(), seq: u64::MAX }).await;
    counted(&runtime, "rejected_applied_beyond_head", 1).await;
    door.send_up(Up::Applied { shard: ShardId::new("lab").unwrap(), seq: 1 }).await;
    counted(&runtime, "rejected_applied_unassigned", 1).await;

    let forgotten = |body: &serde_json::Value, device: &str| {
        let d = body["devices"].as_array().unwrap().iter().find(|d| d["device"] == device).unwrap().clone();
        (d["forgotten"].as_bool().unwrap(), d["applied_seq"].clone())
    };
    let body = erasure(&server, &person).await;
    assert_eq!(body["complete"], false, "{body}");
    assert_eq!(forgotten(&body, "door-b"), (false, json!(null)), "{body}");
    assert_eq!(forgotten(&body, "door-a"), (false, json!(null)), "{body}");

    // door-b's own, true acknowledgement counts.
    victim.send_up(Up::Applied { shard: ShardId::new("lobby").unwrap(), seq: remove_seq }).await;
    for _ in 0..200 {
        if forgotten(&erasure(&server, &person).await, "door-b").0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let body = erasure(&server, &person).await;
    assert_eq!(forgotten(&body, "door-b"), (true, json!(remove_seq)), "{body}");
    assert_eq!(body["complete"], false, "door-a has not acknowledged: {body}");
    runtime.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resync_of_an_unassigned_shard_or_an_impossible_seq_sends_nothing_and_the_server_stays_ready() {
    let db = database();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, runtime) =
        server_with_sync(&db.uri, &fresh_name(), &sync_config(state.path(), port, "server-u")).await;
    create_group(&server, "lobby").await;
    create_group(&server, "lab").await;
    let mut door = Device::enroll(&server, "door-u", &["lobby"], port).await;
    door.subscribe(&topics::device_down(&door.id)).await;
    enroll(&server, "Einstein", "einstein", "lab").await;
    enroll(&server, "Obama", "obama", "lobby").await;
    let lab = ShardId::new("lab").unwrap();
    let lobby = ShardId::new("lobby").unwrap();

    for have_seq in [0, i64::MAX as u64, u64::MAX] {
        door.send_up(Up::ResyncRequest { shard: lab.clone(), have_seq }).await;
    }
    counted(&runtime, "rejected_unassigned_shard", 3).await;
    for have_seq in [i64::MAX as u64, u64::MAX] {
        door.send_up(Up::ResyncRequest { shard: lobby.clone(), have_seq }).await;
    }
    counted(&runtime, "device_ahead", 2).await;
    // The next thing the door hears is the answer to a fair request.
    door.send_up(Up::FreshnessRequest { nonce: 7 }).await;
    match door.next_down().await {
        Down::Freshness(proof) => assert_eq!(proof.nonce, 7),
        other => panic!("expected a freshness proof and nothing before it, got {other:?}"),
    }
    assert!(server.app.state.readiness.is_ready());
    let (status, _) = server.get("/ready", &server.token(Role::Admin)).await;
    assert_eq!(status, StatusCode::OK);
    // The assigned shard still resyncs.
    door.send_up(Up::ResyncRequest { shard: lobby.clone(), have_seq: 0 }).await;
    match door.next_down().await {
        Down::Deltas(b) => assert_eq!(b.shard, lobby),
        Down::Snapshot(c) => assert_eq!(c.shard, lobby),
        other => panic!("expected lobby's deltas, got {other:?}"),
    }
    runtime.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_freshness_proof_names_the_epoch_the_assignment_and_the_heads_and_a_new_epoch_changes_the_deltas() {
    let db = database();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, runtime) =
        server_with_sync(&db.uri, &fresh_name(), &sync_config(state.path(), port, "server-e")).await;
    create_group(&server, "lobby").await;
    create_group(&server, "lab").await;
    let mut door = Device::enroll(&server, "door-e", &["lobby", "lab"], port).await;
    let lobby = ShardId::new("lobby").unwrap();
    door.subscribe(&topics::device_down(&door.id)).await;
    door.subscribe(&topics::shard_delta(&lobby)).await;
    enroll(&server, "Einstein", "einstein", "lobby").await;
    let first: DeltaBatch = decode_verified(&door.next_on(&topics::shard_delta(&lobby)).await, &door.keys).unwrap();
    let epoch = server.app.store.log_epoch().await.unwrap();
    assert_ne!(epoch, 0);
    assert_eq!(first.epoch, epoch);

    door.send_up(Up::FreshnessRequest { nonce: 0xfeed }).await;
    let proof = match door.next_down().await {
        Down::Freshness(proof) => proof,
        other => panic!("expected a freshness proof, got {other:?}"),
    };
    assert_eq!((proof.nonce, proof.epoch), (0xfeed, epoch));
    assert_eq!(proof.assignment.version, 0);
    assert_eq!(proof.assignment.shards, vec![ShardId::new("lab").unwrap(), lobby.clone()]);
    assert_eq!(
        proof.heads,
        vec![
            ShardProgress { shard: ShardId::new("lab").unwrap(), seq: 0 },
            ShardProgress { shard: lobby.clone(), seq: 1 }
        ]
    );
    assert_eq!(runtime.service.stats.get("freshness_answered"), 1);

    // After a restore an operator starts a new epoch: deltas carry it.
    let (old, new) = server.app.store.start_new_epoch("test").await.unwrap();
    assert_eq!(old, epoch);
    assert_ne!(new, epoch);
    enroll(&server, "Obama", "obama", "lobby").await;
    let second: DeltaBatch = decode_verified(&door.next_on(&topics::shard_delta(&lobby)).await, &door.keys).unwrap();
    assert_eq!((second.epoch, second.seq), (new, 2));
    runtime.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_change_reaches_the_door_as_a_signed_assignment_and_erasure_waits_for_its_purge() {
    let db = database();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, runtime) =
        server_with_sync(&db.uri, &fresh_name(), &sync_config(state.path(), port, "server-g")).await;
    create_group(&server, "lobby").await;
    create_group(&server, "lab").await;
    let mut door = Device::enroll(&server, "door-g", &["lobby"], port).await;
    assert_eq!(door.answer.assignment_version, 0);
    door.subscribe(&topics::device_down(&door.id)).await;
    let person = enroll(&server, "Einstein", "einstein", "lobby").await;
    door.send_up(Up::Applied { shard: ShardId::new("lobby").unwrap(), seq: 1 }).await;

    let admin = server.token(Role::Admin);
    let started = std::time::Instant::now();
    let (status, body) = server.json("PUT", "/v1/devices/door-g/groups", &admin, json!({ "groups": ["lab"] })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["assignment_version"], 1, "{body}");
    loop {
        match door.next_down().await {
            Down::Assignment(a) => {
                assert_eq!((a.version, a.shards.clone()), (1, vec![ShardId::new("lab").unwrap()]));
                break;
            }
            other => eprintln!("before the assignment: {other:?}"),
        }
    }
    let took = started.elapsed();
    eprintln!("group change → signed assignment on the door: {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // The person is forgotten after the door left their shard: the door
    // held them, so it counts only once it reports the purge.
    let delete = Request::delete(format!("/v1/identities/{person}"))
        .header("authorization", format!("Bearer {admin}"))
        .body(Body::empty())
        .unwrap();
    let (status, body) = server.send(delete).await;
    assert!(status.is_success(), "{body}");
    let body = erasure(&server, &person).await;
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{body}");
    assert_eq!((devices[0]["device"].clone(), devices[0]["forgotten"].clone()), (json!("door-g"), json!(false)));
    assert_eq!(body["complete"], false);
    // A status of the old assignment (still listing lobby) is not a purge.
    door.send_status(&door.status(0, &[("lobby", 1)], None), &door.signer).await;
    counted(&runtime, "status_recorded", 1).await;
    assert_eq!(erasure(&server, &person).await["complete"], false);
    door.send_status(&door.status(1, &[("lab", 0)], None), &door.signer).await;
    counted(&runtime, "status_recorded", 2).await;
    let body = erasure(&server, &person).await;
    assert_eq!(body["complete"], true, "{body}");
    runtime.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_audit_event_reusing_a_key_with_other_content_is_flagged_and_kept_aside() {
    let db = database();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, runtime) =
        server_with_sync(&db.uri, &fresh_name(), &sync_config(state.path(), port, "server-c")).await;
    create_group(&server, "lobby").await;
    let mut door = Device::enroll(&server, "door-c", &["lobby"], port).await;
    door.subscribe(&topics::device_down(&door.id)).await;
    let id = door.id.clone();
    let in_epoch = |epoch: u64, seq: u64| AuditEvent { epoch, ..event(&id, seq) };

    door.send_up(Up::Audit(AuditBatch { events: vec![in_epoch(5, 1), in_epoch(5, 2)] })).await;
    assert_eq!(door.next_down().await, Down::AuditAck { epoch: 5, up_to_seq: 2 });
    // The same key, other content: flagged, kept aside, acknowledged.
    let mut changed = in_epoch(5, 1);
    changed.decision = facegate_protocol::Decision::Grant;
    door.send_up(Up::Audit(AuditBatch { events: vec![changed] })).await;
    assert_eq!(door.next_down().await, Down::AuditAck { epoch: 5, up_to_seq: 1 });
    assert_eq!(runtime.service.stats.get("audit_conflict"), 1);
    let conflicts = server.app.store.audit_conflicts_of("door-c").await.unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    // The same seq in another outbox epoch is another event.
    door.send_up(Up::Audit(AuditBatch { events: vec![in_epoch(6, 1)] })).await;
    assert_eq!(door.next_down().await, Down::AuditAck { epoch: 6, up_to_seq: 1 });
    // Any u64 epoch is stored (kiosks of an earlier build drew all 64 bits),
    // and a redelivery of it is recognised.
    let high = 12_265_295_813_450_542_291_u64;
    for _ in 0..2 {
        door.send_up(Up::Audit(AuditBatch { events: vec![in_epoch(high, 1)] })).await;
        assert_eq!(door.next_down().await, Down::AuditAck { epoch: high, up_to_seq: 1 });
    }
    assert_eq!(server.app.store.count_audit().await.unwrap(), 4);
    assert_eq!(runtime.service.stats.get("audit_inserted"), 4);
    let (_, page) = server.get("/v1/audit/events?device=door-c", &server.token(Role::Auditor)).await;
    let decisions: Vec<&str> =
        page["events"].as_array().unwrap().iter().map(|e| e["decision"].as_str().unwrap()).collect();
    assert!(!decisions.contains(&"grant"), "the stored event stays: {page}");
    runtime.service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_door_trusting_the_previous_signing_key_is_rolled_over_to_the_new_one() {
    use facegate_protocol::sync::device::{
        DeviceAction, DeviceConfig, DeviceInput, DeviceState, DeviceSync, StatusInfo,
    };
    let db = database();
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    // The key is rotated before the server starts: it signs with the new
    // key and keeps the previous one.
    facegate_sync_server::sync::pki::Pki::load_or_create(state.path(), &[]).unwrap();
    let old_pk8 = std::fs::read(state.path().join("signing.pk8")).unwrap();
    let old = facegate_protocol::SigningKey::from_pkcs8(&old_pk8).unwrap().public_key();
    let rollover = facegate_sync_server::sync::pki::rotate_signing_key(state.path(), false).unwrap();
    assert_eq!(rollover.previous, old.key_id());
    let (server, runtime) =
        server_with_sync(&db.uri, &fresh_name(), &sync_config(state.path(), port, "server-k")).await;
    create_group(&server, "lobby").await;
    let mut door = Device::enroll(&server, "door-k", &["lobby"], port).await;
    assert_eq!(door.answer.signing_keys[0].key_id, rollover.current.to_string());
    door.subscribe(&topics::device_down(&door.id)).await;

    // The real device machine, provisioned before the rotation: it trusts the old key.
    let signer = DeviceSigningKey::from_pkcs8(&DeviceSigningKey::generate_pkcs8().unwrap()).unwrap();
    let mut machine = DeviceSync::new(
        door.id.clone(),
        TrustedKeys::new([old.clone()]),
        signer,
        DeviceConfig::default(),
        DeviceState {
            shards: vec![ShardProgress { shard: ShardId::new("lobby").unwrap(), seq: 0 }],
            ..DeviceState::default()
        },
        StatusInfo { model_id: None, version: "test".into(), health: "ok".into() },
        0,
    );
    // Its status says so (signed with the door's provisioned key).
    door.send_status(&door.status(0, &[("lobby", 0)], Some(old.key_id().to_string())), &door.signer).await;
    let topic = topics::device_down(&door.id);
    let payload = door.next_on(&topic).await;
    let actions = machine.handle(1, DeviceInput::Received { topic: &topic, payload: &payload });
    let trusted: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            DeviceAction::TrustKeys(keys) => Some(keys.iter().map(|k| k.key_id()).collect::<Vec<_>>()),
            _ => None,
        })
        .collect();
    assert_eq!(trusted, vec![vec![rollover.current]], "{actions:?}");
    assert_eq!(runtime.service.stats.get("key_rollover_sent"), 1);
    // A door already on the new key is left alone.
    door.send_status(&door.status(0, &[("lobby", 0)], Some(rollover.current.to_string())), &door.signer).await;
    counted(&runtime, "status_recorded", 2).await;
    assert_eq!(runtime.service.stats.get("key_rollover_sent"), 1);
    runtime.service.stop().await;
}
