//! The whole system as processes, on loopback: the sync server in demo mode
//! (its own MongoDB-protocol server, its embedded TLS broker), a kiosk
//! provisioned with a one-time token, a person enrolled centrally. The kiosk
//! must receive the signed delta, grant the person on a replayed clip, and
//! deliver the audit event to the server exactly once; after a forget it
//! must drop the person. Then a network outage between a kiosk and the
//! broker (a relay the test cuts): the kiosk keeps deciding offline and,
//! once the network is back, every decision is stored centrally once.
//! Real binaries, killed for real.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use facegate_system_tests::{
    Api, Kiosk, Process, Relay, audit_seqs_exactly_once, binary, demo_ready_line, free_port, live_clip, repo, serial,
    wait_for, walk_up_clip,
};
use serde_json::{Value, json};

struct Server {
    _process: Process,
    api: Api,
}

/// `facegate-sync-server demo`: its own database, its embedded broker.
fn start_server(work: &Path) -> Server {
    let http = free_port();
    let mqtt = free_port();
    let mut child = Command::new(binary("facegate-sync-server"))
        .args(["demo", "--listen", &format!("127.0.0.1:{http}"), "--mqtt-port", &mqtt.to_string()])
        .env("FACEGATE_MODELS", repo().join("models"))
        .env("RUST_LOG", "info")
        .current_dir(work)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let ready = demo_ready_line(&mut child);
    let process = Process::from_child("facegate-sync-server", child);
    let ready =
        ready.recv_timeout(Duration::from_secs(300)).expect("the server did not print {url, token} within 300 s");
    let api = Api {
        url: ready["url"].as_str().unwrap().trim_end_matches('/').to_owned(),
        token: ready["token"].as_str().unwrap().to_owned(),
    };
    Server { _process: process, api }
}

/// The demo server with the lobby group and door-1 registered and
/// provisioned (replaying `clip`); answers the token it used.
fn one_door(work: &Path, clip: &Path) -> (Server, Kiosk, String) {
    let server = start_server(work);
    server.api.create_group("lobby");
    let token = server.api.add_device("door-1", &["lobby"]);
    let kiosk = Kiosk::provision(work, &server.api.url, "door-1", &token, clip, 12.5);
    (server, kiosk, token)
}

#[test]
fn an_enrollment_reaches_the_kiosk_and_its_decisions_reach_the_server_exactly_once() {
    let _serial = serial();
    let work = facegate_system_tests::Work::new("system");
    let work = work.path();
    let clip = live_clip();
    let (server, mut kiosk, token) = one_door(work, &clip);
    let api = &server.api;

    // Provisioning: the token works once.
    let again = Command::new(binary("facegate-daemon"))
        .args(["provision", "--server", &api.url, "--token", &token, "--dir", work.join("again").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success(), "a used provisioning token was accepted twice");

    // Provisioning as root hands the files to the service's user (here
    // `nobody`, standing in for `facegate`) and says what comes next; a user
    // that does not exist is refused before the token is spent.
    if facegate_system_tests::running_as_root() {
        let provision = |owner: &str, device: &str, token: &str| {
            let dir = work.join(format!("owned-{device}"));
            let out = Command::new(binary("facegate-daemon"))
                .args(["provision", "--server", &api.url, "--token", token, "--dir", dir.to_str().unwrap()])
                .args(["--owner", owner])
                .output()
                .unwrap();
            (out, dir)
        };
        let token = api.add_device("door-owned", &["lobby"]);
        let (out, _) = provision("no-such-user-here", "refused", &token);
        assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
        let (out, dir) = provision("nobody", "door-owned", &token);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(answer["owner"], "nobody", "{answer}");
        assert!(answer["next"].as_str().unwrap().contains("[sync] dir"), "{answer}");
        let nobody = facegate_system_tests::system_user("nobody").unwrap().0;
        for file in ["", "device.key", "device.crt", "ca.pem", "provisioned.json"] {
            use std::os::unix::fs::MetadataExt;
            let uid = std::fs::metadata(dir.join(file)).unwrap().uid();
            assert_eq!(uid, nobody, "{file:?} is not the service user's");
        }
    }

    // Enroll centrally, from two frames of the clip the kiosk will see.
    let (status, body) = api.enroll("Cap Person", "lobby", &[clip.join("002.jpg"), clip.join("009.jpg")]);
    assert_eq!(status, 201, "enrollment: {body}");
    let identity = body["id"].as_str().unwrap().to_owned();

    kiosk.start();
    wait_for("the delta to reach the kiosk's gallery", Duration::from_secs(180), || {
        kiosk.identities().filter(|&n| n >= 1)
    });
    let grants = wait_for("a grant audited at the server", Duration::from_secs(180), || {
        let events = api.audit("door-1");
        let grants: Vec<Value> =
            events.into_iter().filter(|e| e["decision"] == "grant" && e["identity"] == identity.as_str()).collect();
        (!grants.is_empty()).then_some(grants)
    });
    assert!(grants.iter().all(|g| g["liveness"] == "live"), "{grants:?}");

    // Forget: the kiosk drops the person.
    let (status, body) = api.call("DELETE", &format!("/v1/identities/{identity}"), None);
    assert!(status == 200 || status == 204, "forget: {status} {body}");
    wait_for("the removal to reach the kiosk", Duration::from_secs(120), || kiosk.identities().filter(|&n| n == 0));

    // Drain: every decision the kiosk made reaches the server once.
    kiosk.stop();
    let seqs = audit_seqs_exactly_once(api, "door-1");
    eprintln!("{} audit events delivered, each once", seqs.len());
}

#[test]
fn decisions_made_while_the_broker_is_unreachable_reach_the_server_exactly_once() {
    let _serial = serial();
    let work = facegate_system_tests::Work::new("system");
    let work = work.path();
    // The person walks up again and again: the clip, then a second of empty
    // frames (the track ends), over and over.
    let clip = walk_up_clip(work, 1_200);
    let (server, mut kiosk, _) = one_door(work, &clip);
    let api = &server.api;
    let live = live_clip();
    let (status, body) = api.enroll("Cap Person", "lobby", &[live.join("002.jpg"), live.join("009.jpg")]);
    assert_eq!(status, 201, "enrollment: {body}");

    // The kiosk reaches the broker through the relay.
    let answer = kiosk.sync_dir().join("provisioned.json");
    let mut provisioned: Value = serde_json::from_slice(&std::fs::read(&answer).unwrap()).unwrap();
    let relay = Relay::start(provisioned["mqtt"]["port"].as_u64().unwrap() as u16);
    provisioned["mqtt"]["port"] = json!(relay.port);
    std::fs::write(&answer, serde_json::to_vec(&provisioned).unwrap()).unwrap();

    kiosk.start();
    wait_for("the first decision stored at the server", Duration::from_secs(180), || {
        (!api.audit("door-1").is_empty()).then_some(())
    });

    // Cut the network: the kiosk keeps deciding, into its outbox.
    relay.cut();
    wait_for("the kiosk to notice the outage", Duration::from_secs(60), || {
        kiosk.metric("facegate_sync_connected").filter(|&c| c == 0.0)
    });
    let stored_before = api.audit("door-1").len();
    wait_for("decisions made offline", Duration::from_secs(120), || {
        kiosk.metric("facegate_outbox_depth").filter(|&d| d >= 2.0)
    });
    assert_eq!(api.audit("door-1").len(), stored_before, "events reached the server through a cut network");

    // Back online: the outbox drains, every event stored once.
    relay.restore();
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        kiosk.metric("facegate_outbox_depth").filter(|&d| d == 0.0)
    });
    let made = kiosk.decisions().unwrap();
    kiosk.stop();
    let stored = audit_seqs_exactly_once(api, "door-1").len() as u64;
    assert!(stored >= made, "{made} decisions drained, only {stored} stored");
    eprintln!(
        "{stored} decisions stored once each, {} of them made during the outage",
        (made as usize).saturating_sub(stored_before)
    );
}
