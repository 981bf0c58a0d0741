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

use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary of the workspace, beside this test's own directory.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test --workspace` (or build the workspace first)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the process when dropped (a failing test leaves nothing running).
struct Process {
    name: &'static str,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not stop within 30 s of SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

struct Server {
    _process: Process,
    url: String,
    token: String,
}

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
    let stdout = child.stdout.take().unwrap();
    let process = Process { name: "facegate-sync-server", child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str::<Value>(&line)
                && value.get("token").is_some()
            {
                let _ = tx.send(value);
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(300)).expect("the server did not print {url, token} within 300 s");
    Server {
        _process: process,
        url: ready["url"].as_str().unwrap().trim_end_matches('/').to_owned(),
        token: ready["token"].as_str().unwrap().to_owned(),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

impl Server {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.token);
        let agent = agent();
        let response = match (method, body) {
            ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
            ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
            ("POST", Some(body)) => agent.post(&url).header("authorization", &auth).send_json(body),
            ("POST", None) => agent.post(&url).header("authorization", &auth).send_empty(),
            other => panic!("unsupported {other:?}"),
        };
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn enroll(&self, name: &str, groups: &str, photos: &[PathBuf]) -> (u16, Value) {
        const BOUNDARY: &str = "facegate-system-test-3f9a";
        let mut body = Vec::new();
        for (field, value) in [("name", name), ("groups", groups)] {
            body.extend_from_slice(
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        for photo in photos {
            let file = photo.file_name().unwrap().to_string_lossy();
            body.extend_from_slice(
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{file}\"\r\nContent-Type: image/jpeg\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(&std::fs::read(photo).unwrap());
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        let mut response = agent()
            .post(&format!("{}/v1/identities", self.url))
            .header("authorization", &format!("Bearer {}", self.token))
            .header("content-type", &format!("multipart/form-data; boundary={BOUNDARY}"))
            .send(&body[..])
            .unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn audit(&self, device: &str) -> Vec<Value> {
        let (status, body) = self.call("GET", &format!("/v1/audit/events?device={device}&limit=1000"), None);
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().cloned().unwrap_or_default()
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A metric's value from the daemon's `/metrics`, if it answers.
/// The kiosk's Prometheus text.
fn metrics_text(port: u16) -> Option<String> {
    let mut response = agent().get(&format!("http://127.0.0.1:{port}/metrics")).call().ok()?;
    response.body_mut().read_to_string().ok()
}

fn metric(port: u16, name: &str) -> Option<f64> {
    metrics_text(port)?
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn start_daemon(work: &Path, metrics_port: u16, clip: &Path) -> Process {
    let config = format!(
        r#"[device]
id = "door-1"

[models]
dir = "{models}"

[source]
kind = "replay"
path = "{clip}"
fps = 12.5
repeat = true

[gallery]
db = "{db}"

[decision]
cooldown-ms = 1000

[http]
listen = "127.0.0.1:{metrics_port}"

[sync]
dir = "{sync}"
"#,
        models = repo().join("models").display(),
        clip = clip.display(),
        db = work.join("db").display(),
        sync = work.join("sync").display(),
    );
    let path = work.join("daemon.toml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(binary("facegate-daemon"))
        .args(["run", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Process { name: "facegate-daemon", child }
}

#[test]
fn an_enrollment_reaches_the_kiosk_and_its_decisions_reach_the_server_exactly_once() {
    let work = tempfile_dir();
    let server = start_server(&work);

    let (status, body) = server.call("POST", "/v1/groups", Some(json!({ "id": "lobby" })));
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.call("POST", "/v1/devices", Some(json!({ "id": "door-1", "groups": ["lobby"] })));
    assert_eq!(status, 201, "{body}");
    let token = body["provisioning_token"].as_str().unwrap().to_owned();

    // Provisioning: the token works once.
    let provision = |dir: &Path| {
        Command::new(binary("facegate-daemon"))
            .args(["provision", "--server", &server.url, "--token", &token, "--dir", dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = provision(&work.join("sync"));
    assert!(out.status.success(), "provision: {}", String::from_utf8_lossy(&out.stderr));
    let again = provision(&work.join("sync-again"));
    assert!(!again.status.success(), "a used provisioning token was accepted twice");

    // Enroll centrally, from two frames of the clip the kiosk will see.
    let clip = repo().join("models/testdata/liveness/eval/videos/live_clip");
    let (status, body) = server.enroll("Cap Person", "lobby", &[clip.join("002.jpg"), clip.join("009.jpg")]);
    assert_eq!(status, 201, "enrollment: {body}");
    let identity = body["id"].as_str().unwrap().to_owned();

    let metrics_port = free_port();
    let daemon = start_daemon(&work, metrics_port, &clip);
    wait_for("the delta to reach the kiosk's gallery", Duration::from_secs(180), || {
        metric(metrics_port, "facegate_gallery_identities").filter(|&n| n >= 1.0)
    });
    let grants = wait_for("a grant audited at the server", Duration::from_secs(180), || {
        let events = server.audit("door-1");
        let grants: Vec<Value> =
            events.into_iter().filter(|e| e["decision"] == "grant" && e["identity"] == identity.as_str()).collect();
        (!grants.is_empty()).then_some(grants)
    });
    assert!(grants.iter().all(|g| g["liveness"] == "live"), "{grants:?}");

    // Forget: the kiosk drops the person.
    let (status, body) = server.call("DELETE", &format!("/v1/identities/{identity}"), None);
    assert!(status == 200 || status == 204, "forget: {status} {body}");
    wait_for("the removal to reach the kiosk", Duration::from_secs(120), || {
        metric(metrics_port, "facegate_gallery_identities").filter(|&n| n == 0.0)
    });

    // Drain: every decision the kiosk made reaches the server once.
    let status = daemon.terminate();
    assert!(status.success(), "the daemon stopped with {status}");
    let events = server.audit("door-1");
    let mut seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let count = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), count, "an audit event was stored twice");
    eprintln!("{count} audit events delivered, seqs {:?}..{:?}", seqs.first(), seqs.last());
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("facegate-system-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A TCP relay between the kiosk and the broker that the test can cut: the
/// network outage of a door. While down it closes every relayed connection
/// and refuses new ones.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2) = (Arc::clone(&up), Arc::clone(&open));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the door is offline
                }
                let mut open = open2.lock().unwrap();
                open.extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Every decision the kiosk has made, by its metrics.
fn decisions(port: u16) -> Option<f64> {
    Some(
        metrics_text(port)?
            .lines()
            .filter(|l| l.starts_with("facegate_decisions_total{"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum(),
    )
}

#[test]
fn decisions_made_while_the_broker_is_unreachable_reach_the_server_exactly_once() {
    let work = tempfile_dir();
    let server = start_server(&work);
    let (status, body) = server.call("POST", "/v1/groups", Some(json!({ "id": "lobby" })));
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.call("POST", "/v1/devices", Some(json!({ "id": "door-1", "groups": ["lobby"] })));
    assert_eq!(status, 201, "{body}");
    let token = body["provisioning_token"].as_str().unwrap().to_owned();
    let sync = work.join("sync");
    let out = Command::new(binary("facegate-daemon"))
        .args(["provision", "--server", &server.url, "--token", &token, "--dir", sync.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "provision: {}", String::from_utf8_lossy(&out.stderr));
    let live = repo().join("models/testdata/liveness/eval/videos/live_clip");
    let (status, body) = server.enroll("Cap Person", "lobby", &[live.join("002.jpg"), live.join("009.jpg")]);
    assert_eq!(status, 201, "enrollment: {body}");

    // The kiosk reaches the broker through the relay.
    let answer = sync.join("provisioned.json");
    let mut provisioned: Value = serde_json::from_slice(&std::fs::read(&answer).unwrap()).unwrap();
    let relay = Relay::start(provisioned["mqtt"]["port"].as_u64().unwrap() as u16);
    provisioned["mqtt"]["port"] = json!(relay.port);
    std::fs::write(&answer, serde_json::to_vec(&provisioned).unwrap()).unwrap();

    // The person walks up again and again: the clip, then a second of empty
    // frames (the track ends), over and over.
    let clip = work.join("clip");
    std::fs::create_dir_all(&clip).unwrap();
    for entry in std::fs::read_dir(&live).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, clip.join(path.file_name().unwrap())).unwrap();
    }
    let mut empty = b"P5\n64 48\n255\n".to_vec();
    empty.resize(empty.len() + 64 * 48, 16);
    for i in 0..14 {
        std::fs::write(clip.join(format!("9{i:02}.pgm")), &empty).unwrap();
    }

    let metrics_port = free_port();
    let daemon = start_daemon(&work, metrics_port, &clip);
    wait_for("the first decision stored at the server", Duration::from_secs(180), || {
        (!server.audit("door-1").is_empty()).then_some(())
    });

    // Cut the network: the kiosk keeps deciding, into its outbox.
    relay.cut();
    wait_for("the kiosk to notice the outage", Duration::from_secs(60), || {
        metric(metrics_port, "facegate_sync_connected").filter(|&c| c == 0.0)
    });
    let stored_before = server.audit("door-1").len();
    wait_for("decisions made offline", Duration::from_secs(120), || {
        metric(metrics_port, "facegate_outbox_depth").filter(|&d| d >= 2.0)
    });
    assert_eq!(server.audit("door-1").len(), stored_before, "events reached the server through a cut network");

    // Back online: the outbox drains, every event stored once.
    relay.restore();
    wait_for("the outbox to drain", Duration::from_secs(120), || {
        metric(metrics_port, "facegate_outbox_depth").filter(|&d| d == 0.0)
    });
    let made = decisions(metrics_port).unwrap() as u64;
    let status = daemon.terminate();
    assert!(status.success(), "the daemon stopped with {status}");
    let events = server.audit("door-1");
    let mut seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    let stored = seqs.len() as u64;
    assert_eq!(seqs, (1..=stored).collect::<Vec<u64>>(), "the server's audit of door-1 has a gap or a duplicate");
    assert!(stored >= made, "{made} decisions drained, only {stored} stored");
    eprintln!(
        "{stored} decisions stored once each, {} of them made during the outage",
        (made as usize).saturating_sub(stored_before)
    );
}
