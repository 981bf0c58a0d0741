//! A local MongoDB-protocol server for the demo and the tests.
//!
//! No real `mongod` is in any package registry this project reaches. The npm
//! package `@jongodb/memory-server-bin-linux-x64-gnu` ships a native,
//! in-memory server that speaks the MongoDB wire protocol (Apache-2.0,
//! answers as MongoDB 8.0, x86-64 Linux only). [`ensure_binary`] fetches its
//! tarball once over HTTPS with `curl`, checks the pinned sha256, unpacks it
//! under `~/.cache/facegate/` and reuses it afterwards; [`DevDatabase::start`]
//! runs it on a free loopback port as a one-member replica set.
//!
//! What it does not do (probed, see the README): change streams. The server
//! never requires them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pinned package.
pub const JONGODB_VERSION: &str = "0.1.6";
pub const JONGODB_TARBALL_URL: &str =
    "https://registry.npmjs.org/@jongodb/memory-server-bin-linux-x64-gnu/-/memory-server-bin-linux-x64-gnu-0.1.6.tgz";
pub const JONGODB_TARBALL_SHA256: &str = "bb4ddff36377b1fbefac107476c67c354267f6c6b3dd9f1d89ac547a3480861e";
/// The binary inside the tarball (from the package's own manifest).
pub const JONGODB_BINARY_SHA256: &str = "c53888f078d7f5f38d5386685044cf54dd94aaf831ebc09c76f1d4fbc321b625";
/// Replica-set name the dev server announces.
pub const REPLICA_SET: &str = "rs0";
/// Overrides where the binary is taken from (no download then).
pub const BINARY_ENV: &str = "FACEGATE_JONGODB";

/// Why the dev database could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DevDbError {
    #[error(
        "the test database (jongodb) is only published for x86-64 Linux; this is {os}/{arch}. \
         Point FACEGATE_MONGODB_URI at a MongoDB replica set instead"
    )]
    Unsupported { os: &'static str, arch: &'static str },
    #[error("cannot determine a cache directory: neither XDG_CACHE_HOME nor HOME is set")]
    NoCacheDir,
    #[error(
        "cannot fetch the test database from {url}: {message}. It is needed for the demo and the sync-server \
         tests; check that the npm registry is reachable, or set {BINARY_ENV} to a jongodb binary, or \
         FACEGATE_MONGODB_URI to a MongoDB replica set"
    )]
    Fetch { url: &'static str, message: String },
    #[error("{path}: sha256 {actual}, expected {expected} (refusing to run it)")]
    Checksum { path: PathBuf, expected: &'static str, actual: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the test database did not accept connections on {address} within {seconds} s")]
    NotListening { address: String, seconds: u64 },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevDbError {
    let context = context.into();
    move |source| DevDbError::Io { context, source }
}

/// `$XDG_CACHE_HOME/facegate` or `~/.cache/facegate`.
pub fn cache_dir() -> Result<PathBuf, DevDbError> {
    let base = match (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")) {
        (Some(xdg), _) if !xdg.is_empty() => PathBuf::from(xdg),
        (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".cache"),
        _ => return Err(DevDbError::NoCacheDir),
    };
    Ok(base.join("facegate"))
}

fn sha256_file(path: &Path) -> Result<String, DevDbError> {
    let bytes = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
    Ok(hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The jongodb binary: `FACEGATE_JONGODB` if set, else the cached copy,
/// fetched and checked on first use.
pub fn ensure_binary() -> Result<PathBuf, DevDbError> {
    if let Some(path) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        return Err(DevDbError::Unsupported { os: std::env::consts::OS, arch: std::env::consts::ARCH });
    }
    let root = cache_dir()?.join(format!("jongodb-{JONGODB_VERSION}"));
    let binary = root.join("package/bin/jongodb");
    if binary.is_file() {
        return Ok(binary);
    }
    // One fetch per process: the threads of a test binary start their
    // databases at once, and they would share the staging directory below.
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _fetching = FETCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if binary.is_file() {
        return Ok(binary);
    }
    std::fs::create_dir_all(root.parent().unwrap_or(&root)).map_err(io("creating the cache directory"))?;
    // Unpack into a directory of this process, then rename: concurrent test
    // processes never see a half-written binary, and the first rename wins.
    let staging = root.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io("creating the staging directory"))?;
    let result = fetch_into(&staging);
    let outcome = result.and_then(|()| match std::fs::rename(&staging, &root) {
        Ok(()) => Ok(()),
        Err(_) if binary.is_file() => Ok(()),
        Err(e) => Err(io(format!("moving the test database into {}", root.display()))(e)),
    });
    let _ = std::fs::remove_dir_all(&staging);
    outcome?;
    Ok(binary)
}

fn fetch_into(staging: &Path) -> Result<(), DevDbError> {
    let tarball = staging.join("jongodb.tgz");
    log::info!(url = JONGODB_TARBALL_URL; "fetching the test database (once; cached afterwards)");
    let output = Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location", "--retry", "3", "--max-time", "300", "-o"])
        .arg(&tarball)
        .arg(JONGODB_TARBALL_URL)
        .output()
        .map_err(|e| DevDbError::Fetch { url: JONGODB_TARBALL_URL, message: format!("cannot run curl: {e}") })?;
    if !output.status.success() {
        return Err(DevDbError::Fetch {
            url: JONGODB_TARBALL_URL,
            message: format!("curl {}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    let actual = sha256_file(&tarball)?;
    if actual != JONGODB_TARBALL_SHA256 {
        return Err(DevDbError::Checksum { path: tarball, expected: JONGODB_TARBALL_SHA256, actual });
    }
    let status =
        Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(staging).status().map_err(io("running tar"))?;
    if !status.success() {
        return Err(DevDbError::Fetch { url: JONGODB_TARBALL_URL, message: format!("tar {status}") });
    }
    let binary = staging.join("package/bin/jongodb");
    let actual = sha256_file(&binary)?;
    if actual != JONGODB_BINARY_SHA256 {
        return Err(DevDbError::Checksum { path: binary, expected: JONGODB_BINARY_SHA256, actual });
    }
    let _ = std::fs::remove_file(&tarball);
    Ok(())
}

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16, DevDbError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("binding a free port"))?;
    let port = listener.local_addr().map_err(io("reading the bound port"))?.port();
    Ok(port)
}

/// A running jongodb process, stopped on drop.
#[derive(Debug)]
pub struct DevDatabase {
    child: Child,
    port: u16,
}

impl DevDatabase {
    /// Starts jongodb on a free loopback port as a one-member replica set and
    /// waits until it accepts connections.
    ///
    /// With `tie_to_parent`, jongodb runs under a small `sh` that holds a pipe
    /// from this process and stops jongodb when the pipe closes, so it dies
    /// with us even if we are killed with SIGKILL (the demo uses this).
    pub fn start(tie_to_parent: bool) -> Result<Self, DevDbError> {
        let binary = ensure_binary()?;
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let args = [
                "--host=127.0.0.1".to_string(),
                format!("--port={port}"),
                format!("--replica-set-name={REPLICA_SET}"),
                "--topology-profile=single_node_replicaset".to_string(),
            ];
            let mut command = if tie_to_parent {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(r#""$@" & child=$!; cat >/dev/null; kill "$child" 2>/dev/null; wait "$child""#)
                    .arg("sh")
                    .arg(&binary)
                    .args(&args)
                    .stdin(Stdio::piped());
                c
            } else {
                let mut c = Command::new(&binary);
                c.args(&args).stdin(Stdio::null());
                c
            };
            command.stdout(Stdio::null()).stderr(Stdio::null());
            let child = command.spawn().map_err(io(format!("starting {}", binary.display())))?;
            let mut db = Self { child, port };
            match db.wait_listening(Duration::from_secs(20)) {
                Ok(()) => return Ok(db),
                Err(e) => {
                    db.stop();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(DevDbError::NotListening { address: "127.0.0.1".into(), seconds: 20 }))
    }

    fn wait_listening(&mut self, limit: Duration) -> Result<(), DevDbError> {
        let started = Instant::now();
        let address = format!("127.0.0.1:{}", self.port);
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(DevDbError::Io {
                    context: format!("the test database exited with {status} (port {} taken?)", self.port),
                    source: std::io::Error::other("exited"),
                });
            }
            if std::net::TcpStream::connect(&address).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(DevDbError::NotListening { address, seconds: limit.as_secs() })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection string for the replica set.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?replicaSet={REPLICA_SET}", self.port)
    }

    /// Stops the server (its data is gone: it is in memory).
    pub fn stop(&mut self) {
        // Closing the pipe stops a tied server; killing the shell would orphan it.
        let tied = self.child.stdin.take().is_some();
        if tied {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where tests point their servers: `FACEGATE_MONGODB_URI` when set (a real
/// MongoDB replica set), else a jongodb process of their own, stopped when
/// this drops.
#[derive(Debug)]
pub struct TestDatabase {
    pub uri: String,
    _process: Option<DevDatabase>,
}

impl TestDatabase {
    pub fn start() -> Result<Self, DevDbError> {
        match std::env::var("FACEGATE_MONGODB_URI") {
            Ok(uri) if !uri.is_empty() => Ok(Self { uri, _process: None }),
            _ => {
                let db = DevDatabase::start(false)?;
                Ok(Self { uri: db.uri(), _process: Some(db) })
            }
        }
    }
}

impl Drop for DevDatabase {
    fn drop(&mut self) {
        self.stop();
    }
}
