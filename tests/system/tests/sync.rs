//! The whole system as processes, on loopback: the sync server in demo mode
//! (its own MongoDB-protocol server, its embedded TLS broker), a kiosk
//! provisioned with a one-time token, a person enrolled centrally. The kiosk
//! must receive the signed delta, grant the person on a replayed clip, and
//! deliver the audit event to the server exactly once; after a forget it
//! must drop the person. Real binaries, killed for real.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
fn metric(port: u16, name: &str) -> Option<f64> {
    let mut response = agent().get(&format!("http://127.0.0.1:{port}/metrics")).call().ok()?;
    let text = response.body_mut().read_to_string().ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn start_daemon(work: &Path, metrics_port: u16) -> Process {
    let clip = repo().join("models/testdata/liveness/eval/videos/live_clip");
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
    let daemon = start_daemon(&work, metrics_port);
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
