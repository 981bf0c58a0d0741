//! Hostile traffic on the broker against a running kiosk and server. A
//! provisioned device (its key stolen, say) records its group's genuine
//! deltas, but the broker's ACL refuses its publications on the group's
//! and on another door's topics. The attacker then takes the position of a
//! compromised broker (here: the server's own MQTT identity, which may
//! publish anywhere) and publishes a forged delta (a foreign key), a
//! tampered one (a broken signature), a replay of a genuine enrollment
//! after the person was removed, a genuine-key delta after a gap, an
//! oversized payload, a forged wipe command, and garbage on every topic.
//! Nothing may be applied; each rejection must be logged and counted; the
//! kiosk must go on syncing, and take the genuine commands (resync, rotate
//! key, wipe) the admin API sends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use facegate_protocol::{
    Command, DeltaBatch, DeltaOp, DeviceId, Down, DownMessage, IdentityId, IdentityRecord, ShardId, SigningKey,
    TemplateRecord, TrustedKeys, decode_verified, encode_signed, topics,
};
use facegate_system_tests::{
    Broker, Central, Intruder, Kiosk, Work, database, device_tls, live_clip, people, sample, serial, wait_for,
};
use serde_json::json;

/// TLS files in the layout of a provisioned kiosk (`ca.pem`, `device.crt`,
/// `device.key`) holding the server's own MQTT identity: what a
/// compromised broker (or a stolen server key) can publish.
fn compromised_broker(central: &Central, dir: &std::path::Path) -> std::path::PathBuf {
    let pki = facegate_sync_server::sync::pki::Pki::load_or_create(&central.sync_dir(), &[]).unwrap();
    let pair = pki.issue_client_certificate(facegate_sync_server::sync::pki::SERVER_IDENTITY, 1).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), pki.ca_pem()).unwrap();
    std::fs::write(dir.join("device.crt"), pair.cert_pem).unwrap();
    std::fs::write(dir.join("device.key"), pair.key_pem).unwrap();
    dir.to_path_buf()
}

fn signing_key(central: &Central) -> SigningKey {
    SigningKey::from_pkcs8(&std::fs::read(central.sync_dir().join("signing.pk8")).unwrap()).unwrap()
}

/// A delta adding a person of the attacker's choosing.
fn upsert(shard: &ShardId, epoch: u64, base_seq: u64, seq: u64) -> DeltaBatch {
    let mut vector = Vec::new();
    for i in 0..128 {
        vector.extend_from_slice(&(if i == 0 { 1.0f32 } else { 0.0 }).to_le_bytes());
    }
    DeltaBatch {
        shard: shard.clone(),
        epoch,
        base_seq,
        seq,
        ops: vec![DeltaOp::Upsert {
            identity: IdentityRecord {
                id: IdentityId::new("id-intruder").unwrap(),
                name: "Mallory".into(),
                valid_from: None,
                valid_until: None,
                version: 1,
                offline_access: true,
            },
            templates: vec![TemplateRecord { model_id: "facegate-embed".into(), vector }],
        }],
    }
}

#[test]
fn forged_replayed_gapped_oversized_and_garbage_messages_change_nothing() {
    let _serial = serial();
    let work = Work::new("attacks");
    let db = database();
    let mut central = Central::start(work.path(), &db, Broker::Embedded);
    let api = central.api.clone();
    api.create_group("lobby");
    let token = api.add_device("door-1", &["lobby"]);
    let stolen = api.add_device("intruder", &["lobby"]);
    central.start_broker();
    let clip = live_clip();
    let mut kiosk = Kiosk::provision(work.path(), &api.url, "door-1", &token, &clip, 2.0);
    let intruder_dir = work.path().join("intruder");
    let out = std::process::Command::new(facegate_system_tests::binary("facegate-daemon"))
        .args(["provision", "--server", &api.url, "--token", &stolen, "--dir", intruder_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "provisioning the intruder: {}", String::from_utf8_lossy(&out.stderr));
    kiosk.start();
    wait_for("door-1 to connect", Duration::from_secs(300), || {
        (kiosk.metric("facegate_sync_connected") == Some(1.0)).then_some(())
    });

    // The intruder records the lobby's genuine deltas.
    let lobby = ShardId::new("lobby").unwrap();
    let door = DeviceId::new("door-1").unwrap();
    let intruder = Intruder::connect(device_tls(&intruder_dir), "intruder", central.mqtt_port);
    intruder.subscribe(&topics::shard_delta(&lobby));
    std::thread::sleep(Duration::from_millis(500));
    let (status, body) = api.enroll("Cap Person", "lobby", &[clip.join("002.jpg"), clip.join("009.jpg")]);
    assert_eq!(status, 201, "{body}");
    let cap = body["id"].as_str().unwrap().to_owned();
    let (topic, enrollment) = intruder.received.recv_timeout(Duration::from_secs(30)).expect("no genuine delta seen");
    assert_eq!(topic, topics::shard_delta(&lobby));
    let genuine = TrustedKeys::new([signing_key(&central).public_key()]);
    let epoch = decode_verified::<DeltaBatch>(&enrollment, &genuine).unwrap().epoch;
    let (status, body) = api.call("DELETE", &format!("/v1/identities/{cap}"), None);
    assert!(status == 200 || status == 204, "{body}");
    wait_for("the removal at door-1", Duration::from_secs(30), || (kiosk.identities() == Some(0)).then_some(()));
    let head = api.device_shards("door-1")[0].2;
    let rejected = |reason: &str| {
        sample(&kiosk.metrics().unwrap_or_default(), "facegate_sync_rejected_total", &[("reason", reason)])
            .unwrap_or(0.0) as u64
    };
    let server_rejected_before = central.sync_event("rejected_malformed");

    // The stolen kiosk's certificate may read its group but not write it,
    // nor another door's topics: the broker refuses and counts.
    let delta_topic = topics::shard_delta(&lobby);
    let foreign = SigningKey::from_pkcs8(&SigningKey::generate_pkcs8().unwrap()).unwrap();
    let denied_before = central.sync_event("broker_acl_denied");
    let door_rejected_before = rejected("unknown_key") + rejected("malformed");
    intruder.publish(&delta_topic, encode_signed(&upsert(&lobby, epoch, head, head + 1), &foreign).unwrap());
    intruder.publish(&topics::device_down(&door), b"garbage".to_vec());
    intruder.publish(&topics::device_up(&door), b"garbage".to_vec());
    if central.broker == Broker::Embedded {
        wait_for("the broker to refuse the stolen certificate's publications", Duration::from_secs(30), || {
            (central.sync_event("broker_acl_denied") >= denied_before + 3).then_some(())
        });
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        rejected("unknown_key") + rejected("malformed"),
        door_rejected_before,
        "a publication the broker refused reached door-1"
    );

    // The attacks, from where a compromised broker stands.
    let intruder = Intruder::connect(
        device_tls(&compromised_broker(&central, &work.path().join("compromised"))),
        "compromised-broker",
        central.mqtt_port,
    );
    intruder.publish(&delta_topic, encode_signed(&upsert(&lobby, epoch, head, head + 1), &foreign).unwrap());
    let mut tampered = enrollment.clone();
    let at = tampered.windows(6).position(|w| w == b"\x63sig\x58\x40").expect("a signature in the envelope");
    tampered[at + 16] ^= 0x5a;
    intruder.publish(&delta_topic, tampered);
    intruder.publish(&delta_topic, enrollment.clone());
    intruder.publish(
        &delta_topic,
        encode_signed(&upsert(&lobby, epoch, head + 50, head + 51), &signing_key(&central)).unwrap(),
    );
    intruder.publish(&delta_topic, vec![0xa5; facegate_protocol::Kind::Delta.max_bytes() + 1000]);
    intruder.publish(&delta_topic, b"\xff\x00 not cbor".to_vec());
    let wipe =
        DownMessage { device: door.clone(), sent_at: 0, body: Down::Command { id: 1_000_000, command: Command::Wipe } };
    intruder.publish(&topics::device_down(&door), encode_signed(&wipe, &foreign).unwrap());
    intruder.publish(&topics::device_down(&door), b"garbage".to_vec());
    intruder.publish(&topics::device_up(&door), b"garbage".to_vec());
    intruder.publish(&topics::device_status(&door), b"garbage".to_vec());

    let expected =
        [("unknown_key", 2), ("bad_signature", 1), ("stale", 1), ("gap", 1), ("too_large", 1), ("malformed", 2)];
    wait_for("every rejection counted at door-1", Duration::from_secs(30), || {
        expected.iter().all(|(reason, n)| rejected(reason) >= *n).then_some(())
    });
    for (reason, n) in expected {
        eprintln!("door-1 rejected {} message(s) as {reason} (expected {n})", rejected(reason));
    }
    wait_for("the server to count the garbage uplinks", Duration::from_secs(30), || {
        (central.sync_event("rejected_malformed") >= server_rejected_before + 2).then_some(())
    });

    // Nothing applied, nothing wiped; every rejection in the log.
    assert_eq!(kiosk.identities(), Some(0), "an attack changed the gallery");
    assert!(!kiosk.sync_dir().join("wiped").exists(), "a forged wipe was executed");
    assert_eq!(api.device_shards("door-1")[0].1, Some(head), "the applied seq moved");
    let log = kiosk.log();
    assert!(log.matches("sync message rejected").count() >= 6, "rejections not logged:\n{log}");
    assert!(log.matches("delta not applied").count() >= 2, "stale and gap deltas not logged:\n{log}");

    // And it still syncs: the next genuine enrollment arrives.
    let (name, photo) = people().into_iter().next().unwrap();
    let (status, body) = api.enroll(&name, "lobby", &[photo]);
    assert_eq!(status, 201, "{body}");
    wait_for("the next genuine delta at door-1", Duration::from_secs(30), || {
        (kiosk.identities() == Some(1)).then_some(())
    });

    // Genuine commands from the admin API are taken, in order.
    let command = |name: &str| {
        let (status, body) = api.call("POST", "/v1/devices/door-1/commands", Some(json!({ "command": name })));
        assert_eq!(status, 202, "{name}: {body}");
        let id = body["id"].as_i64().unwrap();
        wait_for(&format!("door-1 to take {name}"), Duration::from_secs(30), || {
            let (_, device) = api.call("GET", "/v1/devices/door-1", None);
            let taken = device["commands"].as_array()?.iter().any(|c| c["id"] == id && c["state"] == "taken");
            taken.then_some(())
        });
    };
    let (status, body) = api.call("POST", "/v1/devices/door-1/commands", Some(json!({ "command": "format-disk" })));
    assert_eq!(status, 400, "{body}");
    command("resync");
    command("rotate_key");
    assert_eq!(kiosk.identities(), Some(1), "the gallery did not survive the key rotation");
    command("wipe");
    wait_for("the wipe", Duration::from_secs(30), || (kiosk.identities() == Some(0)).then_some(()));
    assert!(kiosk.sync_dir().join("wiped").exists(), "no wipe marker");
    kiosk.stop();
}
