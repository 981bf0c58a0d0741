//! Sync figures, with the real server (`facegate-sync-server serve` on
//! jongodb) and each broker side by side: the embedded `rumqttd` and
//! mosquitto.
//!
//! - Propagation: N simulated kiosks (MQTT clients in this process, TLS with
//!   a provisioned device certificate, each verifying the signature of what
//!   it receives) subscribe to a shard; an administrator enrolls a person
//!   and then removes them. Latency per kiosk: from the enrollment's `201`
//!   (the delta is committed before it) or from sending the `DELETE`, to the
//!   verified delta in the kiosk's hands. p50 / p99 / max over every kiosk
//!   and round.
//! - Audit ingest: D devices each publish batches of audit events, one
//!   batch in flight (as a kiosk does), the next after the server's
//!   acknowledgement; events per second stored in MongoDB, then every event
//!   read back through the API, each exactly once.
//! - Snapshot: a shard of 100k templates (`FACEGATE_BENCH_SNAPSHOT`), four
//!   per person as enrolled from several photos
//!   (`FACEGATE_BENCH_SNAPSHOT_PER_PERSON`), whose delta log is compacted,
//!   asked for by a kiosk that has never synced it: from the resync request
//!   to every chunk received and verified by the device's sync machine (of
//!   which the server's read from MongoDB, from its log), then to the shard
//!   replaced in the daemon's sled store (encrypted, one transaction).
//!
//! `cargo bench -p facegate-system-tests --bench sync` measures N = 10, 100,
//! 1000 (`FACEGATE_BENCH_CLIENTS=10,100` to choose) on both brokers
//! (`FACEGATE_BENCH_BROKERS=embedded,mosquitto`). Under
//! `cargo test` (no `--bench`) it runs once, small, on the embedded broker:
//! a check that the bench and the paths it measures work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use facegate_daemon::store::{DeviceKey, GalleryModel, GalleryStore, LiveShard, StoreConfig};
use facegate_protocol::sync::device::{DeviceAction, DeviceConfig, DeviceInput, DeviceState, DeviceSync, StatusInfo};
use facegate_protocol::{
    AuditBatch, AuditEvent, Decision, DeltaBatch, DeviceId, DeviceSigningKey, Down, DownMessage, LivenessVerdict,
    ShardId, ShardProgress, SigningKey, StageMillis, TrustedKeys, Up, UpMessage, decode_verified, encode_device_signed,
    topics,
};
use facegate_sync_server::store::{Store, binary as bson_binary};
use facegate_system_tests::{
    Broker, Central, Work, audit_seqs_exactly_once, binary, database, device_signing_key, device_tls, live_clip,
};
use mongodb::bson::{Document, doc};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::mpsc;

/// The embedder the simulated kiosks' galleries are for.
const MODEL: &str = "dlib-resnet29-v1";

/// What a client's event loop reports.
enum Seen {
    Connected(usize),
    Subscribed,
    Message { client: usize, topic: String, payload: Vec<u8>, at: Instant },
}

/// Starts an MQTT client whose events arrive on `tx`.
fn client(
    tls: &Arc<rustls::ClientConfig>,
    id: String,
    port: u16,
    index: usize,
    tx: mpsc::UnboundedSender<Seen>,
) -> AsyncClient {
    let mut options = MqttOptions::new(id, "localhost", port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::clone(tls))));
    options.set_keep_alive(Duration::from_secs(60));
    options.set_max_packet_size(Some(4 * 1024 * 1024));
    let (client, mut events) = AsyncClient::new(options, 256);
    tokio::spawn(async move {
        loop {
            let seen = match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Seen::Connected(index),
                Ok(Event::Incoming(Packet::SubAck(_))) => Seen::Subscribed,
                Ok(Event::Incoming(Packet::Publish(p))) => Seen::Message {
                    client: index,
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                    at: Instant::now(),
                },
                Ok(_) => continue,
                Err(rumqttc::v5::ConnectionError::RequestsDone) => return,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    client
}

fn provision(work: &Path, api_url: &str, token: &str, name: &str) -> std::path::PathBuf {
    let dir = work.join(name);
    let out = std::process::Command::new(binary("facegate-daemon"))
        .args(["provision", "--server", api_url, "--token", token, "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "provisioning {name}: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Figures {
    lines: Vec<String>,
}

impl Figures {
    fn report(&mut self, line: String) {
        println!("{line}");
        self.lines.push(line);
    }
}

#[allow(clippy::too_many_arguments)]
async fn propagation(
    central: &Central,
    sims: &[Arc<rustls::ClientConfig>],
    keys: &TrustedKeys,
    n: usize,
    rounds: usize,
    broker: Broker,
    figures: &mut Figures,
) {
    let api = central.api.clone();
    let lobby = ShardId::new("lobby").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let clients: Vec<AsyncClient> =
        (0..n).map(|i| client(&sims[i], format!("sim-{i}"), central.mqtt_port, i, tx.clone())).collect();
    drop(tx);
    let (mut connected, mut subscribed) = (0, 0);
    while subscribed < n {
        match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await.expect("clients connecting").unwrap() {
            Seen::Connected(i) => {
                connected += 1;
                clients[i].subscribe(topics::shard_delta(&lobby), QoS::AtLeastOnce).await.unwrap();
            }
            Seen::Subscribed => subscribed += 1,
            Seen::Message { .. } => {}
        }
    }
    println!("{broker:?}: {connected} simulated kiosks connected and subscribed in {:?}", started.elapsed());
    let live = live_clip();
    let photos = [live.join("002.jpg"), live.join("009.jpg")];
    let (mut enroll, mut remove) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut enrolled: Option<String> = None;
        for adding in [true, false] {
            let api = api.clone();
            let (t0, id) = if adding {
                let photos = photos.clone();
                let (status, body) =
                    tokio::task::spawn_blocking(move || api.enroll("Bench Person", "lobby", &photos)).await.unwrap();
                assert_eq!(status, 201, "{body}");
                (Instant::now(), body["id"].as_str().unwrap().to_owned())
            } else {
                let id = enrolled.take().unwrap();
                let path = format!("/v1/identities/{id}");
                let t0 = Instant::now();
                let (status, body) =
                    tokio::task::spawn_blocking(move || api.call("DELETE", &path, None)).await.unwrap();
                assert!(status == 200 || status == 204, "{body}");
                (t0, id)
            };
            enrolled = Some(id.clone());
            let mut got = vec![None; n];
            let mut missing = n;
            while missing > 0 {
                let seen = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("{missing} of {n} kiosks did not receive the delta for {id}"))
                    .unwrap();
                if let Seen::Message { client, topic, payload, at } = seen {
                    assert_eq!(topic, topics::shard_delta(&lobby));
                    let batch: DeltaBatch = decode_verified(&payload, keys).expect("a delta that verifies");
                    let ours = batch.ops.iter().any(|op| match op {
                        facegate_protocol::DeltaOp::Upsert { identity, .. } => identity.id.as_str() == id,
                        facegate_protocol::DeltaOp::Remove { identity } => identity.as_str() == id,
                    });
                    if ours && got[client].is_none() {
                        got[client] = Some(at.saturating_duration_since(t0));
                        missing -= 1;
                    }
                }
            }
            let into = if adding { &mut enroll } else { &mut remove };
            into.extend(got.into_iter().map(Option::unwrap));
        }
    }
    for (what, samples) in [("enrollment", &mut enroll), ("removal", &mut remove)] {
        samples.sort_unstable();
        figures.report(format!(
            "{broker:?} | N = {n} | {what} | p50 {} | p99 {} | max {} | {} samples",
            ms(percentile(samples, 0.50)),
            ms(percentile(samples, 0.99)),
            ms(*samples.last().unwrap()),
            samples.len()
        ));
    }
    for c in clients {
        let _ = c.disconnect().await;
    }
}

fn event(device: &DeviceId, seq: u64) -> AuditEvent {
    AuditEvent {
        device: device.clone(),
        epoch: 0,
        seq,
        at: 1_790_000_000_000 + seq as i64,
        decision: Decision::Unknown,
        identity: None,
        score: Some(0.41),
        liveness: LivenessVerdict::Live,
        liveness_score: Some(0.93),
        reason: Some("no match above the threshold".into()),
        model_id: "bench".into(),
        frames: 6,
        timings_ms: StageMillis::default(),
    }
}

async fn audit_ingest(
    central: &Central,
    devices: &[(DeviceId, Arc<rustls::ClientConfig>, DeviceSigningKey)],
    keys: &TrustedKeys,
    batches: u64,
    per_batch: u64,
    broker: Broker,
    figures: &mut Figures,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let clients: Vec<AsyncClient> = devices
        .iter()
        .enumerate()
        .map(|(i, (id, tls, _))| client(tls, id.to_string(), central.mqtt_port, i, tx.clone()))
        .collect();
    drop(tx);
    let mut subscribed = 0;
    while subscribed < clients.len() {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("devices connecting").unwrap() {
            Seen::Connected(i) => {
                clients[i].subscribe(topics::device_down(&devices[i].0), QoS::AtLeastOnce).await.unwrap();
            }
            Seen::Subscribed => subscribed += 1,
            Seen::Message { .. } => {}
        }
    }
    let total = batches * per_batch * devices.len() as u64;
    let send = |i: usize, batch: u64| {
        let (device, _, key) = &devices[i];
        let events = (batch * per_batch + 1..=(batch + 1) * per_batch).map(|s| event(device, s)).collect();
        let message = UpMessage { device: device.clone(), sent_at: 0, body: Up::Audit(AuditBatch { events }) };
        (topics::device_up(device), encode_device_signed(&message, key).unwrap())
    };
    let started = Instant::now();
    let mut next = vec![0u64; devices.len()];
    for (i, c) in clients.iter().enumerate() {
        let (topic, payload) = send(i, 0);
        c.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }
    let mut done = 0;
    while done < devices.len() {
        let seen =
            tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("audit acknowledgements").unwrap();
        let Seen::Message { client, payload, .. } = seen else { continue };
        let message: DownMessage = decode_verified(&payload, keys).unwrap();
        let Down::AuditAck { up_to_seq, .. } = message.body else { continue };
        if up_to_seq < (next[client] + 1) * per_batch {
            continue; // an older acknowledgement
        }
        next[client] += 1;
        if next[client] == batches {
            done += 1;
        } else {
            let (topic, payload) = send(client, next[client]);
            clients[client].publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        }
    }
    let took = started.elapsed();
    for c in clients {
        let _ = c.disconnect().await;
    }
    let api = central.api.clone();
    let ids: Vec<String> = devices.iter().map(|(d, _, _)| d.to_string()).collect();
    let stored: u64 =
        tokio::task::spawn_blocking(move || ids.iter().map(|d| audit_seqs_exactly_once(&api, d).len() as u64).sum())
            .await
            .unwrap();
    assert_eq!(stored, total, "events stored vs sent");
    figures.report(format!(
        "{broker:?} | audit ingest | {} devices x {batches} batches x {per_batch} events | {total} events in {:.2} s | {:.0} events/s | all {stored} stored once",
        devices.len(),
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    ));
}

/// Writes a shard of `templates` templates, `per_person` for each identity,
/// straight into MongoDB, as if its whole delta log had been compacted: the
/// shard's counter and the publisher's position at the identity count (one
/// enrollment each), no log entries. Returns the identity count.
async fn seed_shard(uri: &str, shard: &str, templates: usize, per_person: usize) -> usize {
    let people = templates.div_ceil(per_person);
    let store = Store::connect(uri, "fleet", 4, Duration::from_secs(10), None).await.unwrap();
    let (identities, vectors) =
        (store.database().collection::<Document>("identities"), store.database().collection::<Document>("templates"));
    let mut seed = 7u64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    const PAGE: usize = 5000;
    for start in (0..people).step_by(PAGE) {
        let range = start..(start + PAGE).min(people);
        let identities_page: Vec<Document> = range
            .clone()
            .map(|i| {
                doc! { "_id": format!("person-{i:07}"), "name": format!("Person {i}"), "valid_from": null,
                "valid_until": null, "groups": [shard], "version": 1_i64, "created_at": 0_i64,
                "updated_at": 0_i64, "created_by": "bench" }
            })
            .collect();
        let faces: Vec<Document> = range
            .flat_map(|i| (0..per_person).map(move |k| (i, k)))
            .filter(|(i, k)| i * per_person + k < templates)
            .map(|(i, k)| {
                let mut v: Vec<f32> = (0..128).map(|_| noise()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= norm);
                doc! { "_id": format!("tp-{i:07}-{k:02}"), "identity": format!("person-{i:07}"), "model_id": MODEL,
                "vector": bson_binary(v.iter().flat_map(|x| x.to_le_bytes()).collect()), "photo": "bench",
                "created_at": 0_i64 }
            })
            .collect();
        identities.insert_many(identities_page).await.unwrap();
        vectors.insert_many(faces).await.unwrap();
    }
    let counter = format!("delta:{shard}");
    store
        .database()
        .collection::<Document>("counters")
        .insert_one(doc! { "_id": counter, "seq": people as i64 })
        .await
        .unwrap();
    store.record_published(&ShardId::new(shard).unwrap(), people as u64, "bench").await.unwrap();
    people
}

/// A kiosk that has never synced `big` (a fresh device, or one back after
/// the log was compacted) asks for it: the server reads the shard, signs it
/// in chunks and sends them through the broker; the device's own sync
/// machine verifies and assembles them, and the daemon's store replaces the
/// shard in one transaction (templates encrypted, fsynced).
#[allow(clippy::too_many_arguments)]
async fn snapshot(
    central: &Central,
    uri: &str,
    (tls, signer): (&Arc<rustls::ClientConfig>, DeviceSigningKey),
    keys: &TrustedKeys,
    (templates, per_person): (usize, usize),
    broker: Broker,
    figures: &mut Figures,
) {
    let seeding = Instant::now();
    let people = seed_shard(uri, "big", templates, per_person).await;
    println!("{broker:?}: {people} identities, {templates} templates written to MongoDB in {:?}", seeding.elapsed());
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("device.key");
    DeviceKey::generate(&key).unwrap();
    let config = StoreConfig::new(root.path().join("db"), GalleryModel { id: MODEL.into(), dim: 128 });
    let gallery = LiveShard::open(&config, DeviceKey::load(&key).unwrap()).unwrap();
    let device = DeviceId::new("snap").unwrap();
    let big = ShardId::new("big").unwrap();
    let now = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut machine = DeviceSync::new(
        device.clone(),
        keys.clone(),
        signer,
        DeviceConfig::default(),
        DeviceState { shards: vec![ShardProgress { shard: big.clone(), seq: 0 }], ..DeviceState::default() },
        StatusInfo { model_id: Some(MODEL.into()), version: "bench".into(), health: "ok".into() },
        now(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = client(tls, device.to_string(), central.mqtt_port, 0, tx);
    let mut subscribed = 0;
    let wanted = machine.subscriptions();
    while subscribed < wanted.len() {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("connecting").unwrap() {
            Seen::Connected(_) => {
                for topic in &wanted {
                    client.subscribe(topic.clone(), QoS::AtLeastOnce).await.unwrap();
                }
            }
            Seen::Subscribed => subscribed += 1,
            Seen::Message { .. } => {}
        }
    }
    let asked = Instant::now();
    let mut actions = machine.handle(now(), DeviceInput::Connected);
    let (mut chunks, mut bytes) = (0, 0);
    let (received, applied) = loop {
        let mut done = None;
        for action in std::mem::take(&mut actions) {
            match action {
                DeviceAction::Publish(p) => {
                    client.publish(p.topic, QoS::AtLeastOnce, p.retain, p.payload).await.unwrap()
                }
                DeviceAction::ApplySnapshot { shard, seq, entries } => {
                    let received = asked.elapsed();
                    assert_eq!((entries.len(), seq), (people, people as u64));
                    let local = tokio::task::block_in_place(|| gallery.apply_snapshot(&shard, seq, &entries)).unwrap();
                    done = Some((received, asked.elapsed(), local));
                }
                _ => {}
            }
        }
        if let Some((received, applied, _)) = done {
            break (received, applied);
        }
        let seen = tokio::time::timeout(Duration::from_secs(300), rx.recv()).await.expect("the snapshot").unwrap();
        if let Seen::Message { topic, payload, .. } = seen {
            if topic == topics::device_down(&device) {
                chunks += 1;
                bytes += payload.len();
            }
            actions = machine.handle(now(), DeviceInput::Received { topic: &topic, payload: &payload });
            assert!(
                !actions.iter().any(|a| matches!(a, DeviceAction::Rejected { .. })),
                "the device refused part of the snapshot: {actions:?}"
            );
        }
    };
    let _ = client.disconnect().await;
    assert_eq!(gallery.stats().unwrap().templates, templates);
    let read = server_snapshot_read(&central.server_log());
    figures.report(format!(
        "{broker:?} | snapshot | {templates} templates of {people} people, {chunks} down messages, {:.1} MB | server read {:.2} s | received and verified {:.2} s | applied {:.2} s | total {:.2} s",
        bytes as f64 / 1e6,
        read.as_secs_f64(),
        received.as_secs_f64(),
        (applied - received).as_secs_f64(),
        applied.as_secs_f64()
    ));
}

/// How long the server's last snapshot read from MongoDB took, from its
/// log line `snapshot read; sending it … read_ms=N` (part of "received").
fn server_snapshot_read(log: &str) -> Duration {
    let line =
        log.lines().rev().find(|l| l.contains("snapshot read; sending it")).expect("the server logs its snapshot read");
    let ms = line.split_once("read_ms=").and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next());
    Duration::from_millis(ms.and_then(|ms| ms.parse().ok()).unwrap_or_else(|| panic!("no read_ms in {line:?}")))
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = match std::env::var("FACEGATE_BENCH_CLIENTS") {
        Ok(list) => list.split(',').map(|n| n.trim().parse().expect("FACEGATE_BENCH_CLIENTS: numbers")).collect(),
        Err(_) if bench => vec![10, 100, 1000],
        Err(_) => vec![10],
    };
    let brokers = match std::env::var("FACEGATE_BENCH_BROKERS") {
        Ok(list) => list
            .split(',')
            .map(|b| match b.trim() {
                "embedded" => Broker::Embedded,
                "mosquitto" => Broker::Mosquitto,
                other => panic!("FACEGATE_BENCH_BROKERS: {other:?} is not embedded or mosquitto"),
            })
            .collect(),
        Err(_) if bench => vec![Broker::Embedded, Broker::Mosquitto],
        Err(_) => vec![Broker::Embedded],
    };
    let (rounds, devices, batches, per_batch) = if bench { (5, 10, 4, 250) } else { (1, 2, 2, 50) };
    let snapshot_templates = match std::env::var("FACEGATE_BENCH_SNAPSHOT") {
        Ok(n) => n.trim().parse().expect("FACEGATE_BENCH_SNAPSHOT: a number of templates"),
        Err(_) if bench => 100_000,
        Err(_) => 2_000,
    };
    let per_person: usize = match std::env::var("FACEGATE_BENCH_SNAPSHOT_PER_PERSON") {
        Ok(n) => {
            n.trim().parse().ok().filter(|n| (1..=16).contains(n)).expect("FACEGATE_BENCH_SNAPSHOT_PER_PERSON: 1 to 16")
        }
        Err(_) => 4,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut figures = Figures { lines: Vec::new() };
    for broker in brokers {
        let work = Work::new(&format!("bench-sync-{broker:?}").to_lowercase());
        let db = database();
        let mut central = Central::start(work.path(), &db, broker);
        let api = central.api.clone();
        api.create_group("lobby");
        let most = sizes.iter().copied().max().unwrap_or(0);
        let sim_tokens: Vec<String> = (0..most).map(|i| api.add_device(&format!("sim-{i}"), &["lobby"])).collect();
        api.create_group("big");
        let snap_token = api.add_device("snap", &["big"]);
        let audit_tokens: Vec<(String, String)> =
            (0..devices).map(|i| format!("audit-{i}")).map(|d| (d.clone(), api.add_device(&d, &[]))).collect();
        central.start_broker();
        let keys =
            TrustedKeys::new([SigningKey::from_pkcs8(&std::fs::read(central.sync_dir().join("signing.pk8")).unwrap())
                .unwrap()
                .public_key()]);
        // One certificate per simulated kiosk: the broker binds the client id
        // to the certificate's CN.
        let sims: Vec<Arc<rustls::ClientConfig>> = sim_tokens
            .iter()
            .enumerate()
            .map(|(i, token)| device_tls(&provision(work.path(), &api.url, token, &format!("sim-{i}"))))
            .collect();
        let snap_dir = provision(work.path(), &api.url, &snap_token, "snap");
        let snap = (device_tls(&snap_dir), device_signing_key(&snap_dir));
        let audit_devices: Vec<(DeviceId, Arc<rustls::ClientConfig>, DeviceSigningKey)> = audit_tokens
            .iter()
            .map(|(d, token)| {
                let dir = provision(work.path(), &api.url, token, d);
                (DeviceId::new(d.clone()).unwrap(), device_tls(&dir), device_signing_key(&dir))
            })
            .collect();
        runtime.block_on(async {
            for &n in &sizes {
                propagation(&central, &sims, &keys, n, rounds, broker, &mut figures).await;
            }
            audit_ingest(&central, &audit_devices, &keys, batches, per_batch, broker, &mut figures).await;
            snapshot(
                &central,
                &db.uri,
                (&snap.0, snap.1),
                &keys,
                (snapshot_templates, per_person),
                broker,
                &mut figures,
            )
            .await;
        });
    }
    println!("\nsync figures ({}):", if bench { "cargo bench" } else { "test mode, small" });
    for line in &figures.lines {
        println!("  {line}");
    }
}
