//! The door side of a site: kiosk daemons on replay clips, the network
//! between a door and the broker (a relay the test can cut), and the TLS
//! identity of a provisioned device for in-process MQTT clients.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Process, binary, decisions, logs_of, metric, metrics_text, repo};

/// A folder of frames where a person walks up again and again: the live
/// clip of the test data, then `gap_ms` of empty frames at the clip's
/// recorded rate (longer than the tracker's 700 ms: the track ends).
pub fn walk_up_clip(work: &Path, gap_ms: u32) -> PathBuf {
    let live = live_clip();
    let clip = work.join("clip");
    std::fs::create_dir_all(&clip).unwrap();
    for entry in std::fs::read_dir(&live).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, clip.join(path.file_name().unwrap())).unwrap();
    }
    let mut empty = b"P5\n64 48\n255\n".to_vec();
    empty.resize(empty.len() + 64 * 48, 16);
    let frames = (f64::from(gap_ms) / 1e3 * f64::from(LIVE_CLIP_FPS)).ceil() as usize;
    for i in 0..frames {
        std::fs::write(clip.join(format!("9{i:02}.pgm")), &empty).unwrap();
    }
    clip
}

/// The frame rate the live clip was recorded at (its `videos.csv`).
pub const LIVE_CLIP_FPS: f32 = 12.5;

/// The live clip of the liveness test data (a person at a kiosk camera).
pub fn live_clip() -> PathBuf {
    repo().join("models/testdata/liveness/eval/videos/live_clip")
}

/// A kiosk daemon on a replay source, provisioned against a server.
#[derive(Debug)]
pub struct Kiosk {
    pub id: String,
    pub dir: PathBuf,
    /// The daemon's `/metrics` port, read from its log once it listens
    /// (it binds port 0: no port picked ahead can be taken meanwhile).
    metrics_port: AtomicU16,
    config: PathBuf,
    process: Option<Process>,
    starts: u32,
}

impl Kiosk {
    /// `facegate-daemon provision` with the one-time token, then the
    /// daemon's configuration: the replay source (recorded at
    /// [`LIVE_CLIP_FPS`]) sampled at `fps`, as a camera taking `fps` frames
    /// a second of the same scene would: what moves between two frames is
    /// real motion over that time, as liveness expects.
    pub fn provision(work: &Path, server_url: &str, id: &str, token: &str, clip: &Path, fps: f32) -> Self {
        let dir = work.join(id);
        let sync = dir.join("sync");
        let out = Command::new(binary("facegate-daemon"))
            .args(["provision", "--server", server_url, "--token", token, "--dir", sync.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "provisioning {id}: {}", String::from_utf8_lossy(&out.stderr));
        let config = dir.join("daemon.toml");
        std::fs::write(
            &config,
            format!(
                r#"[device]
id = "{id}"

[models]
dir = "{models}"

[source]
kind = "replay"
path = "{clip}"
fps = {LIVE_CLIP_FPS}
sample-fps = {fps}
repeat = true

[gallery]
db = "{db}"

[decision]
cooldown-ms = 1000

[http]
listen = "127.0.0.1:0"

[sync]
dir = "{sync}"
"#,
                models = repo().join("models").display(),
                clip = clip.display(),
                db = dir.join("db").display(),
                sync = sync.display(),
            ),
        )
        .unwrap();
        Self { id: id.into(), dir, metrics_port: AtomicU16::new(0), config, process: None, starts: 0 }
    }

    /// Adds `key = value` lines to the daemon's `[sync]` section (the last
    /// one of its configuration).
    pub fn set_sync_options(&self, lines: &str) {
        let mut config = std::fs::read_to_string(&self.config).unwrap();
        config.push_str(lines);
        config.push('\n');
        std::fs::write(&self.config, config).unwrap();
    }

    pub fn start(&mut self) {
        assert!(self.process.is_none(), "{} is already running", self.id);
        self.starts += 1;
        let log = self.dir.join(format!("daemon-{}.log", self.starts));
        self.metrics_port.store(0, Ordering::Relaxed);
        let mut command = Command::new(binary("facegate-daemon"));
        command.args(["run", "--config", self.config.to_str().unwrap()]).env("RUST_LOG", "info");
        self.process = Some(Process::spawn_logged(&format!("facegate-daemon {}", self.id), &mut command, &log));
    }

    /// SIGTERM; the daemon must stop cleanly.
    pub fn stop(&mut self) {
        let status = self.process.take().expect("not running").terminate();
        assert!(status.success(), "{} stopped with {status}", self.id);
    }

    /// The sync directory (device key, certificate, provisioning answer).
    pub fn sync_dir(&self) -> PathBuf {
        self.dir.join("sync")
    }

    /// The port the running daemon's `/metrics` listens on, once its log
    /// says so.
    fn metrics_port(&self) -> Option<u16> {
        let known = self.metrics_port.load(Ordering::Relaxed);
        if known != 0 {
            return Some(known);
        }
        let log = std::fs::read_to_string(self.dir.join(format!("daemon-{}.log", self.starts))).ok()?;
        let line = log.lines().find(|l| l.contains("health and metrics endpoint listening"))?;
        let port: u16 = line.split("addr=").nth(1)?.split_whitespace().next()?.rsplit(':').next()?.parse().ok()?;
        self.metrics_port.store(port, Ordering::Relaxed);
        Some(port)
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        metric(self.metrics_port()?, name)
    }

    pub fn metrics(&self) -> Option<String> {
        metrics_text(self.metrics_port()?)
    }

    pub fn identities(&self) -> Option<u64> {
        self.metric("facegate_gallery_identities").map(|n| n as u64)
    }

    pub fn decisions(&self) -> Option<u64> {
        decisions(self.metrics_port()?).map(|n| n as u64)
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        logs_of(&self.dir, "daemon", self.starts)
    }
}

/// A TCP relay between a kiosk and the broker that the test can cut: the
/// network outage of a door. While down it closes every relayed connection
/// and refuses new ones.
#[derive(Debug)]
pub struct Relay {
    pub port: u16,
    up: Arc<AtomicBool>,
    /// While set, what the broker sends is dropped (what the door sends
    /// still goes through): a broker or network that withholds messages.
    starving: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let starving = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2, starving2) = (Arc::clone(&up), Arc::clone(&open), Arc::clone(&starving));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the door is offline
                }
                let mut open = open2.lock().unwrap();
                open.extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to, downstream) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap(), false),
                    (server.try_clone().unwrap(), client.try_clone().unwrap(), true),
                ] {
                    let starving = Arc::clone(&starving2);
                    std::thread::spawn(move || {
                        let mut buffer = [0u8; 16 * 1024];
                        loop {
                            let n = match std::io::Read::read(&mut from, &mut buffer) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if downstream && starving.load(Ordering::SeqCst) {
                                continue;
                            }
                            if std::io::Write::write_all(&mut to, &buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, up, starving, open }
    }

    /// From now on every byte from the broker to the door is dropped.
    pub fn starve(&self) {
        self.starving.store(true, Ordering::SeqCst);
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.starving.store(false, Ordering::SeqCst);
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A rustls client configuration (ring) for an MQTT client holding the
/// certificate `facegate-daemon provision` wrote into `sync_dir`: trusts the
/// provisioned CA, presents the device certificate.
pub fn device_tls(sync_dir: &Path) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(sync_dir.join("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(sync_dir.join("device.crt")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(sync_dir.join("device.key")).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap(),
    )
}
