//! A mosquitto configuration for a site: TLS with client certificates from
//! the device CA (`require_certificate`, `use_identity_as_username`: the
//! certificate's CN is the user name, `use_username_as_clientid`: and the
//! client id, so no device can take over another's session by naming its
//! client id) and a per-device ACL generated from the database:
//!
//! - the sync server ([`SERVER_IDENTITY`]) may read and write `facegate/#`;
//! - a device may publish only on its own `up` and `status` topics, and
//!   subscribe only to its own `down` topic and its shards' `delta` topics.
//!
//! Revoked devices are left out of the ACL and their certificates are in
//! the CA's revocation list (`crlfile`), so a revoked device cannot even
//! complete the TLS handshake. mosquitto reads the list when a listener
//! starts: restart it after a revocation (`SIGHUP` reloads the ACL only).
//!
//! With `use_username_as_clientid`, every sync-server replica connects as
//! the client id [`SERVER_IDENTITY`] (they share one certificate): on
//! mosquitto a second replica takes over the first one's session, so run
//! one replica per mosquitto site (the embedded broker keeps the replicas'
//! own client ids).
//!
//! mosquitto drops root to its own user: the files are written readable by
//! the owner given (`mosquitto`). The ACL follows the database by itself
//! when the server is given its path and a reload command
//! ([`AclFollower`], `[sync] mosquitto-acl`); otherwise regenerate the
//! files when devices or their groups change.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::pki::{Pki, Revoked, SERVER_IDENTITY};

/// One device's entry of the ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAcl {
    pub device: facegate_protocol::DeviceId,
    pub shards: Vec<facegate_protocol::ShardId>,
}

/// The files written.
#[derive(Debug, Clone)]
pub struct MosquittoFiles {
    pub conf: PathBuf,
    pub acl: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum MosquittoError {
    #[error("revocation list: {0}")]
    Revocation(#[from] super::pki::PkiError),
    #[error("reading the devices: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{what} {value:?} in the database is not a valid name: {message}")]
    BadName { what: &'static str, value: String, message: String },
    #[error("the ACL reload command {command:?} {outcome}")]
    Reload { command: Vec<String>, outcome: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Every device's ACL entry, from the database: revoked devices are left
/// out, pending ones are in (the ACL is ready when they are provisioned).
pub async fn site_devices(store: &crate::store::Store) -> Result<Vec<DeviceAcl>, MosquittoError> {
    let bad = |what, value: &str, e: &dyn std::fmt::Display| MosquittoError::BadName {
        what,
        value: value.to_owned(),
        message: e.to_string(),
    };
    let mut devices = Vec::new();
    for d in store.list_devices().await? {
        if d.state == crate::store::DeviceState::Revoked {
            continue;
        }
        let device = facegate_protocol::DeviceId::new(d.id.clone()).map_err(|e| bad("device", &d.id, &e))?;
        let shards = d
            .groups
            .iter()
            .map(|g| facegate_protocol::ShardId::new(g.clone()).map_err(|e| bad("group", g, &e)))
            .collect::<Result<Vec<_>, _>>()?;
        devices.push(DeviceAcl { device, shards });
    }
    Ok(devices)
}

/// Keeps a running mosquitto's ACL in step with the database (`[sync]
/// mosquitto-acl`, `mosquitto-reload`): [`AclFollower::follow`] renders
/// the ACL and, when it differs from what was last written, replaces the
/// file atomically and runs the reload command. A failure is retried on
/// the next call.
#[derive(Debug)]
pub struct AclFollower {
    path: PathBuf,
    reload: Vec<String>,
    /// The ACL mosquitto was last made to read.
    written: Option<String>,
    /// A rewrite whose reload failed: the file is current, mosquitto not.
    reload_owed: bool,
}

/// How long the reload command may take.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl AclFollower {
    pub fn new(path: PathBuf, reload: Vec<String>) -> Self {
        Self { path, reload, written: None, reload_owed: false }
    }

    /// Rewrites and reloads the ACL if the database changed it; answers
    /// whether it did.
    pub async fn follow(&mut self, store: &crate::store::Store) -> Result<bool, MosquittoError> {
        let acl = render_acl(&site_devices(store).await?);
        self.apply(acl).await
    }

    /// Makes `acl` the one mosquitto reads, if it is not already.
    async fn apply(&mut self, acl: String) -> Result<bool, MosquittoError> {
        if self.written.as_deref() == Some(acl.as_str()) {
            return Ok(false);
        }
        let on_disk = std::fs::read_to_string(&self.path).ok();
        if self.written.is_none() && !self.reload_owed && on_disk.as_deref() == Some(acl.as_str()) {
            // Already current (written by `facegate-sync-server mosquitto`).
            self.written = Some(acl);
            return Ok(false);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MosquittoError::Io { path, source }
        };
        let temporary = self.path.with_extension("new");
        let _ = std::fs::remove_file(&temporary);
        std::fs::write(&temporary, acl.as_bytes()).map_err(io(&temporary))?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o444)).map_err(io(&temporary))?;
        std::fs::rename(&temporary, &self.path).map_err(io(&self.path))?;
        self.written = None;
        self.reload_owed = true;
        self.reload().await?;
        self.reload_owed = false;
        self.written = Some(acl);
        Ok(true)
    }

    async fn reload(&self) -> Result<(), MosquittoError> {
        let failed = |outcome: String| MosquittoError::Reload { command: self.reload.clone(), outcome };
        let Some((program, args)) = self.reload.split_first() else {
            return Err(failed("is empty".into()));
        };
        let run = tokio::process::Command::new(program).args(args).kill_on_drop(true).output();
        match tokio::time::timeout(RELOAD_TIMEOUT, run).await {
            Err(_) => Err(failed(format!("took longer than {} s", RELOAD_TIMEOUT.as_secs()))),
            Ok(Err(e)) => Err(failed(format!("could not run: {e}"))),
            Ok(Ok(output)) if !output.status.success() => {
                Err(failed(format!("failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim())))
            }
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// The ACL file.
pub fn render_acl(devices: &[DeviceAcl]) -> String {
    let root = facegate_protocol::topics::ROOT;
    let mut out = String::from("# Generated by facegate-sync-server; regenerate, do not edit.\n\n");
    let _ = writeln!(out, "user {SERVER_IDENTITY}\ntopic readwrite facegate/#\n");
    for d in devices {
        if d.shards.is_empty() {
            continue;
        }
        let _ = writeln!(out, "user {}", d.device);
        for s in &d.shards {
            let _ = writeln!(out, "topic read {root}/shard/{s}/delta");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "# every client: its own device topics only (%u is the certificate's CN)");
    let _ = writeln!(out, "pattern write {root}/device/%u/up");
    let _ = writeln!(out, "pattern write {root}/device/%u/status");
    let _ = writeln!(out, "pattern read {root}/device/%u/down");
    out
}

/// `mosquitto.conf` for files in `dir`.
pub fn render_conf(dir: &Path, listen: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "# Generated by facegate-sync-server.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         acl_file {d}/acl\n\
         persistence true\n\
         persistence_location {d}/data/\n\
         max_queued_messages 10000\n\
         max_packet_size {max}\n\
         log_dest stderr\n\
         log_type error\nlog_type warning\nlog_type notice\n\
         \n\
         listener {port} {host}\n\
         protocol mqtt\n\
         cafile {d}/ca.pem\n\
         certfile {d}/server.pem\n\
         keyfile {d}/server.key\n\
         require_certificate true\n\
         use_identity_as_username true\n\
         use_username_as_clientid true\n\
         crlfile {d}/crl.pem\n\
         tls_version tlsv1.2\n",
        max = super::broker::MAX_PACKET_BYTES,
        port = listen.port(),
        host = listen.ip(),
    )
}

pub use facegate_cli::users::{running_as_root, system_user};

/// Writes `mosquitto.conf`, `acl`, the CA and the broker's certificate and
/// key into `dir` (created), owned by `owner` when given.
pub fn write(
    dir: &Path,
    pki: &Pki,
    listen: SocketAddr,
    devices: &[DeviceAcl],
    revoked: &[Revoked],
    owner: Option<(u32, u32)>,
) -> Result<MosquittoFiles, MosquittoError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MosquittoError::Io { path, source }
    };
    std::fs::create_dir_all(dir.join("data")).map_err(io(dir))?;
    let (server_cert, server_key) = pki.server_paths();
    let files: Vec<(PathBuf, Vec<u8>, u32)> = vec![
        (dir.join("ca.pem"), pki.ca_pem().as_bytes().to_vec(), 0o444),
        (dir.join("server.pem"), std::fs::read(&server_cert).map_err(io(&server_cert))?, 0o444),
        (dir.join("server.key"), std::fs::read(&server_key).map_err(io(&server_key))?, 0o400),
        (dir.join("acl"), render_acl(devices).into_bytes(), 0o444),
        (dir.join("crl.pem"), pki.revocation_list_pem(revoked)?.into_bytes(), 0o444),
        (dir.join("mosquitto.conf"), render_conf(dir, listen).into_bytes(), 0o444),
    ];
    for (path, bytes, mode) in &files {
        let _ = std::fs::remove_file(path);
        std::fs::write(path, bytes).map_err(io(path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).map_err(io(path))?;
    }
    if let Some((uid, gid)) = owner {
        let mut paths: Vec<PathBuf> = files.iter().map(|(p, _, _)| p.clone()).collect();
        paths.extend([dir.to_path_buf(), dir.join("data")]);
        for path in &paths {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io(path))?;
        }
    }
    Ok(MosquittoFiles { conf: dir.join("mosquitto.conf"), acl: dir.join("acl") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_reload_is_retried_even_though_the_file_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let (path, marker) = (dir.path().join("acl"), dir.path().join("reloaded"));
        let acl = render_acl(&[]);
        std::fs::write(&path, &acl).unwrap();
        // Current on disk, nothing owed: nothing to do.
        let mut follower = AclFollower::new(path.clone(), vec!["false".into()]);
        assert!(!follower.apply(acl.clone()).await.unwrap());
        // A change whose reload fails: written, reported…
        let changed = render_acl(&[DeviceAcl {
            device: facegate_protocol::DeviceId::new("kiosk-1").unwrap(),
            shards: vec![facegate_protocol::ShardId::new("lobby").unwrap()],
        }]);
        let err = follower.apply(changed.clone()).await.unwrap_err();
        assert!(err.to_string().contains("\"false\""), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), changed);
        // …and reloaded on the next round, though the file is current by then.
        follower.reload = vec!["touch".into(), marker.display().to_string()];
        assert!(follower.apply(changed.clone()).await.unwrap());
        assert!(marker.exists(), "mosquitto was never told");
        assert!(!follower.apply(changed).await.unwrap());
    }

    #[test]
    fn the_acl_gives_each_device_its_own_topics_and_its_shards() {
        let acl = render_acl(&[DeviceAcl {
            device: facegate_protocol::DeviceId::new("kiosk-1").unwrap(),
            shards: vec![facegate_protocol::ShardId::new("lobby").unwrap()],
        }]);
        assert!(acl.contains("user facegate:server\ntopic readwrite facegate/#\n"), "{acl}");
        assert!(acl.contains("user kiosk-1\ntopic read facegate/v1/shard/lobby/delta\n"), "{acl}");
        assert!(acl.contains("pattern write facegate/v1/device/%u/up\n"), "{acl}");
        assert!(acl.contains("pattern read facegate/v1/device/%u/down\n"), "{acl}");
    }

    #[test]
    fn the_client_id_is_the_certificate_identity() {
        let conf = render_conf(Path::new("/etc/facegate/mosquitto"), "127.0.0.1:8883".parse().unwrap());
        assert!(conf.contains("\nuse_identity_as_username true\nuse_username_as_clientid true\n"), "{conf}");
        assert!(conf.contains("\nrequire_certificate true\n"), "{conf}");
        assert!(conf.contains("\ncrlfile /etc/facegate/mosquitto/crl.pem\n"), "{conf}");
    }
}
