//! `facegate-sync-server`: the central server and its administration commands.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use facegate_sync_server::app::{self, AppError};
use facegate_sync_server::auth::{self, Role};
use facegate_sync_server::config::{Config, ConfigError, ProcessEnvironment};
use facegate_sync_server::crypto::{PhotoCipher, hex, random_bytes};
use facegate_sync_server::engine::Actor;
use facegate_sync_server::readiness::Readiness;
use facegate_sync_server::store::{DeviceDoc, StoreError, UserDoc, now_millis};
use facegate_sync_server::{api, devdb, exit, import, logging, server, sync};

#[derive(Debug, Parser)]
#[command(
    name = "facegate-sync-server",
    version,
    about = "facegate central server: admin API, enrollment, de-duplication"
)]
struct Cli {
    /// Configuration file (TOML); FACEGATE__SECTION__KEY variables override it.
    #[arg(long, short, global = true, env = "FACEGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Run on embedded defaults: a local MongoDB-protocol server (unless
    /// FACEGATE_MONGODB_URI is set), a throwaway secret; prints {"url", "token"} once ready.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Port of the embedded MQTT broker (TLS, loopback); 0: no sync.
        #[arg(long, default_value_t = 8883)]
        mqtt_port: u16,
    },
    /// Check or print the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage administrators.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Enroll many people from a folder or a CSV file; prints a JSON summary.
    Import {
        /// A folder: sub-folders are people, loose images are people.
        #[arg(long, conflicts_with = "csv", required_unless_present = "csv")]
        dir: Option<PathBuf>,
        /// A CSV with columns name, photo[, groups, key].
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Groups every imported person joins (comma-separated).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Recorded as the actor in the admin trail.
        #[arg(long, default_value = "import")]
        actor: String,
    },
    /// Manage kiosks.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Sync administration: log epochs, signing-key rollover.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Write a mosquitto configuration for this site into a directory: TLS
    /// with client certificates from the device CA and a per-device ACL
    /// from the database (revoked devices left out). Rerun when devices or
    /// their groups change, then send mosquitto SIGHUP.
    Mosquitto {
        /// Directory for mosquitto.conf, acl, ca.pem, server.pem, server.key, data/.
        #[arg(long)]
        out: PathBuf,
        /// Address mosquitto listens on.
        #[arg(long, default_value = "0.0.0.0:8883")]
        listen: SocketAddr,
        /// System user mosquitto drops to; the files are given to it when
        /// this runs as root. Empty: leave ownership alone.
        #[arg(long, default_value = "mosquitto")]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum DevicesCommand {
    /// Register a kiosk; prints its one-time provisioning token (JSON).
    Add {
        /// Device id (A-Z a-z 0-9 . _ -): the certificate's CN, the MQTT topics' name.
        id: String,
        /// Groups (gallery shards) whose people this kiosk admits, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
        /// Lifetime of the provisioning token, in seconds (60 .. 30 days).
        #[arg(long, default_value_t = facegate_sync_server::store::devices::PROVISIONING_TOKEN_TTL_SECS)]
        token_ttl_secs: u64,
        /// The admin API's address, written into the printed provisioning command.
        #[arg(long)]
        server_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Start a new log epoch: run after restoring the database from a
    /// backup. Every device then forgets its synced shards and fetches them
    /// anew (the restored log may be behind what devices applied); the
    /// recorded applied seqs of every device are forgotten. Prints JSON.
    NewEpoch,
    /// Replace the delta-signing key without provisioning devices again:
    /// `signing.pk8` becomes `signing.previous.pk8` and a new `signing.pk8`
    /// is made in `[sync] state-dir`. Copy both to every replica and restart
    /// them; devices that still trust the previous key are sent a rollover
    /// signed by it. Prints JSON.
    RotateSigningKey {
        /// Replace an existing `signing.previous.pk8` (devices still
        /// trusting it must then be provisioned again).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Parse and check the configuration (exit 78 when it is bad).
    Validate,
    /// Print the compiled-in defaults as TOML.
    Default,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a user; the password is read from the first line of standard input.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "admin")]
        role: Role,
    },
}

fn main() -> ExitCode {
    let cli = match facegate_cli::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(status) => return status,
    };
    logging::init();
    // One TLS crypto provider for the process (MongoDB's rustls and ours): ring.
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        log::debug!("a rustls crypto provider was already installed");
    }
    match cli.command {
        Command::Config(ConfigCommand::Default) => {
            print!("{}", Config::default_toml());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Validate) => match load_config(cli.config.as_ref()) {
            Ok(config) => match auth::load_secret(&config.auth, &ProcessEnvironment) {
                Ok(_) => {
                    println!("configuration ok");
                    ExitCode::SUCCESS
                }
                Err(e) => config_failure(&e),
            },
            Err(e) => config_failure(&e),
        },
        command => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(exit::SOFTWARE);
                }
            };
            let config_path = cli.config.clone();
            match runtime.block_on(run(command, config_path)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(exit_code_of(&e))
                }
            }
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    Config::load(path.map(PathBuf::as_path), &ProcessEnvironment)
}

fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("error: bad configuration: {e}");
    ExitCode::from(exit::CONFIG)
}

fn exit_code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<ConfigError>().is_some() {
            return exit::CONFIG;
        }
        if let Some(app) = cause.downcast_ref::<AppError>() {
            return match app {
                AppError::Config(_) | AppError::Threshold(_) => exit::CONFIG,
                AppError::Models(_) | AppError::Store(_) => exit::UNAVAILABLE,
                AppError::Index(_) | AppError::Crypto(_) | AppError::Threads(_) => exit::SOFTWARE,
            };
        }
        if cause.downcast_ref::<devdb::DevDbError>().is_some() {
            return exit::UNAVAILABLE;
        }
        if cause.downcast_ref::<import::ImportError>().is_some() {
            return exit::NO_INPUT;
        }
        if let Some(start) = cause.downcast_ref::<sync::SyncStartError>() {
            return match start {
                sync::SyncStartError::Pki { .. } => exit::CANT_CREATE,
                sync::SyncStartError::Broker(_) | sync::SyncStartError::Join => exit::OS_ERROR,
                sync::SyncStartError::Service(_) => exit::SOFTWARE,
            };
        }
        if cause.downcast_ref::<sync::pki::PkiError>().is_some()
            || cause.downcast_ref::<sync::mosquitto::MosquittoError>().is_some()
        {
            return exit::CANT_CREATE;
        }
    }
    exit::SOFTWARE
}

async fn run(command: Command, config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => serve(config_path).await,
        Command::Demo { listen, mqtt_port } => demo(listen, mqtt_port).await,
        Command::Admin(AdminCommand::Create { name, role }) => admin_create(config_path, name, role).await,
        Command::Import { dir, csv, groups, actor } => bulk_import(config_path, dir, csv, groups, actor).await,
        Command::Devices(DevicesCommand::Add { id, groups, name, token_ttl_secs, server_url }) => {
            devices_add(config_path, id, groups, name, token_ttl_secs, server_url).await
        }
        Command::Mosquitto { out, listen, user } => mosquitto_files(config_path, out, listen, user).await,
        Command::Sync(SyncCommand::NewEpoch) => new_epoch(config_path).await,
        Command::Sync(SyncCommand::RotateSigningKey { force }) => rotate_signing_key(config_path, force),
        Command::Config(_) => Ok(ExitCode::SUCCESS),
    }
}

fn photo_cipher(config: &Config) -> anyhow::Result<PhotoCipher> {
    let path = config.storage.photo_key_file.as_ref().ok_or_else(|| ConfigError::Invalid {
        key: "storage.photo-key-file",
        message: "a photo key file is required (32 random bytes: head -c 32 /dev/urandom > photo.key)".into(),
    })?;
    PhotoCipher::from_file(path)
        .map_err(|e| ConfigError::Invalid { key: "storage.photo-key-file", message: e.to_string() }.into())
}

async fn serve(config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path.as_ref())?;
    let secret = auth::load_secret(&config.auth, &ProcessEnvironment)?;
    let cipher = photo_cipher(&config)?;
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(
            server::tls_acceptor(cert, key)
                .map_err(|e| ConfigError::Invalid { key: "server.tls-cert", message: e.to_string() })?,
        ),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let pipeline = load_pipeline(&config).await?;
    let readiness = Readiness::new();
    let app = app::start(&config, &secret, cipher, pipeline, readiness).await?;
    let sync = start_sync(&config, &app).await?;
    log::info!(listen:% = config.server.listen, tls = tls.is_some(); "serving the admin API");
    let mut router = api::router(app.state.clone());
    if let Some(sync) = &sync {
        router = sync.serve(router);
    }
    server::run(listener, tls, router, server::termination(), Duration::from_secs(config.server.shutdown_grace_secs))
        .await?;
    if let Some(sync) = sync {
        sync.service.stop().await;
    }
    app.stop().await;
    log::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The MQTT sync side (PKI, embedded broker, sync service), when enabled.
async fn start_sync(config: &Config, app: &app::App) -> anyhow::Result<Option<sync::SyncRuntime>> {
    if !config.sync.enabled {
        return Ok(None);
    }
    let runtime =
        sync::start(&config.sync, app.store.clone(), &app.state.readiness, Arc::clone(&app.state.metrics.sync_events))
            .await?;
    log::info!(broker = config.sync.broker_host.as_str(), port = config.sync.broker_port,
        state_dir:% = config.sync.state_dir.display(); "MQTT sync enabled");
    Ok(Some(runtime))
}

async fn load_pipeline(config: &Config) -> anyhow::Result<Arc<facegate_face::FacePipeline>> {
    let config = config.clone();
    Ok(tokio::task::spawn_blocking(move || app::load_pipeline(&config)).await??)
}

async fn demo(listen: SocketAddr, mqtt_port: u16) -> anyhow::Result<ExitCode> {
    let mut config = load_config(None)?;
    let _database = if std::env::var("FACEGATE_MONGODB_URI").is_ok_and(|u| !u.is_empty()) {
        None
    } else {
        let db = tokio::task::spawn_blocking(|| devdb::DevDatabase::start(true)).await??;
        config.mongodb.uri = db.uri();
        Some(db)
    };
    config.mongodb.database = format!("facegate_demo_{}", hex(&random_bytes::<4>()?));
    config.auth.token_ttl_secs = 8 * 3600;
    let secret = hex(&random_bytes::<32>()?).into_bytes();
    let cipher = PhotoCipher::ephemeral()?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    let pipeline = load_pipeline(&config).await?;
    let readiness = Readiness::new();
    let app = app::start(&config, &secret, cipher, pipeline, readiness.clone()).await?;
    let password = hex(&random_bytes::<16>()?);
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password)).await??;
    let user = UserDoc {
        name: "admin".into(),
        password_hash: hash,
        role: "admin".into(),
        created_at: now_millis(),
        disabled: false,
    };
    app.store.create_user(&user).await?;
    let (token, _) = app.state.keys.issue("admin", Role::Admin)?;
    let mut router = api::router(app.state.clone());
    let mut sync_runtime = None;
    if mqtt_port != 0 {
        config.sync.enabled = true;
        config.sync.state_dir = std::env::temp_dir().join(format!("facegate-demo-sync-{}", hex(&random_bytes::<4>()?)));
        config.sync.embedded_listen = SocketAddr::from(([127, 0, 0, 1], mqtt_port));
        config.sync.broker_port = mqtt_port;
        match start_sync(&config, &app).await {
            Ok(runtime) => sync_runtime = runtime,
            Err(e) => log::warn!(error:% = e; "MQTT sync not started; the demo runs without it"),
        }
    }
    if let Some(sync) = &sync_runtime {
        router = sync.serve(router);
    }
    let server = tokio::spawn(server::run(listener, None, router, server::termination(), Duration::from_secs(5)));
    while !readiness.is_ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut line = serde_json::json!({ "url": format!("http://{local}"), "token": token });
    if let Some(sync) = &sync_runtime {
        line["mqtt"] = serde_json::json!({
            "host": config.sync.broker_host,
            "port": config.sync.broker_port,
            "ca_file": sync.pki.ca_path(),
        });
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    drop(stdout);
    server.await??;
    if let Some(sync) = sync_runtime {
        sync.service.stop().await;
    }
    app.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn admin_create(config_path: Option<PathBuf>, name: String, role: Role) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path.as_ref())?;
    facegate_protocol::DeviceId::new(name.clone())
        .context("user names use the identifier alphabet (A-Z a-z 0-9 . _ -)")?;
    eprintln!("password for {name} (one line on standard input, at least {} characters):", auth::MIN_PASSWORD_CHARS);
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']).to_string();
    let hash = match auth::hash_password(&password) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(exit::DATA));
        }
    };
    let store = connect_store(&config).await?;
    let user = UserDoc {
        name: name.clone(),
        password_hash: hash,
        role: role.as_str().into(),
        created_at: now_millis(),
        disabled: false,
    };
    store.create_user(&user).await.map_err(AppError::from)?;
    let record = facegate_sync_server::engine::action(
        &Actor { name: "command-line".into(), role: Role::Admin },
        "user.create",
        Some(&name),
        "ok",
        mongodb::bson::doc! { "role": role.as_str() },
    );
    store.record_action(&record).await.map_err(AppError::from)?;
    println!("created {role} {name}");
    Ok(ExitCode::SUCCESS)
}

async fn bulk_import(
    config_path: Option<PathBuf>,
    dir: Option<PathBuf>,
    csv: Option<PathBuf>,
    groups: Vec<String>,
    actor: String,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path.as_ref())?;
    let people = match (&dir, &csv) {
        (Some(dir), _) => import::from_folder(dir, &groups)?,
        (None, Some(csv)) => import::from_csv(csv, &groups)?,
        (None, None) => return Ok(ExitCode::from(exit::USAGE)),
    };
    let secret = hex(&random_bytes::<32>()?).into_bytes();
    let cipher = photo_cipher(&config)?;
    let pipeline = load_pipeline(&config).await?;
    let app = app::start(&config, &secret, cipher, pipeline, Readiness::new()).await?;
    let actor = Actor { name: format!("import:{actor}"), role: Role::Admin };
    let summary = import::run(&app.state.engine, &actor, people, &mut std::io::stderr()).await;
    eprintln!(
        "imported {} of {} people ({} refused) in {:.1} s, {:.2} photos/s",
        summary.enrolled, summary.people, summary.refused, summary.seconds, summary.photos_per_second
    );
    for (reason, count) in &summary.reasons {
        eprintln!("  refused, {reason}: {count}");
    }
    for o in summary.outcomes.iter().filter(|o| o.refused.is_some()) {
        eprintln!("  {}: {}", o.name, o.refused.as_deref().unwrap_or_default());
    }
    println!("{}", serde_json::to_string(&summary)?);
    app.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn connect_store(config: &Config) -> anyhow::Result<facegate_sync_server::store::Store> {
    let store = facegate_sync_server::store::Store::connect(
        &config.mongodb.uri,
        &config.mongodb.database,
        2,
        Duration::from_secs(config.mongodb.server_selection_timeout_secs),
        None,
    )
    .await
    .map_err(AppError::from)?;
    store.init().await.map_err(AppError::from)?;
    Ok(store)
}

async fn devices_add(
    config_path: Option<PathBuf>,
    id: String,
    groups: Vec<String>,
    name: Option<String>,
    token_ttl_secs: u64,
    server_url: Option<String>,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path.as_ref())?;
    let groups: Vec<String> = groups.into_iter().filter(|g| !g.is_empty()).collect();
    let device_id = match facegate_protocol::DeviceId::new(id.clone()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: device id {id:?}: {e}");
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    for g in &groups {
        if let Err(e) = facegate_protocol::ShardId::new(g.clone()) {
            eprintln!("error: group {g:?}: {e}");
            return Ok(ExitCode::from(exit::USAGE));
        }
    }
    let store = connect_store(&config).await?;
    let (device, token) = DeviceDoc::pending(&device_id, name, groups, token_ttl_secs)?;
    let record = facegate_sync_server::engine::action(
        &Actor { name: "command-line".into(), role: Role::Admin },
        "device.create",
        Some(device_id.as_str()),
        "ok",
        mongodb::bson::doc! { "groups": device.groups.clone() },
    );
    match store.create_device(&device, &record).await {
        Ok(()) => {}
        Err(e @ (StoreError::AlreadyExists { .. } | StoreError::NotFound { .. })) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(exit::DATA));
        }
        Err(e) => return Err(AppError::from(e).into()),
    }
    let server = server_url.unwrap_or_else(|| "https://SERVER".into());
    println!(
        "{}",
        serde_json::json!({
            "id": device.id,
            "groups": device.groups,
            "provisioning_token": token,
            "token_expires_at_ms": device.token_expires_at,
            "provision": format!(
                "facegate-daemon provision --server {server} --token {token} --dir /var/lib/facegate/sync"
            ),
        })
    );
    Ok(ExitCode::SUCCESS)
}

async fn mosquitto_files(
    config_path: Option<PathBuf>,
    out: PathBuf,
    listen: SocketAddr,
    user: String,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path.as_ref())?;
    let owner = if user.is_empty() || !sync::mosquitto::running_as_root() {
        None
    } else {
        Some(sync::mosquitto::system_user(&user).ok_or_else(|| ConfigError::Invalid {
            key: "--user",
            message: format!("no system user {user:?} (is mosquitto installed? pass --user '' to keep ownership)"),
        })?)
    };
    let store = connect_store(&config).await?;
    let devices = sync::mosquitto::site_devices(&store).await?;
    let mut names = vec![config.sync.broker_host.clone()];
    names.extend(config.sync.certificate_names.iter().cloned());
    let pki = sync::pki::Pki::load_or_create(&config.sync.state_dir, &names)?;
    let revoked = store.revoked_certificates().await.map_err(AppError::from)?;
    let files = sync::mosquitto::write(&out, &pki, listen, &devices, &revoked, owner)?;
    println!(
        "{}",
        serde_json::json!({
            "conf": files.conf,
            "acl": files.acl,
            "devices": devices.len(),
            "revoked_certificates": revoked.len(),
            "run": format!("mosquitto -c {}", files.conf.display()),
        })
    );
    Ok(ExitCode::SUCCESS)
}

async fn new_epoch(config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path.as_ref())?;
    let store = connect_store(&config).await?;
    let (old, new) = store.start_new_epoch("command-line").await.map_err(AppError::from)?;
    let record = facegate_sync_server::engine::action(
        &Actor { name: "command-line".into(), role: Role::Admin },
        "sync.new-epoch",
        None,
        "ok",
        mongodb::bson::doc! { "old": old.to_string(), "new": new.to_string() },
    );
    store.record_action(&record).await.map_err(AppError::from)?;
    log::warn!(old, new; "a new log epoch started: every device fetches its shards anew");
    println!("{}", serde_json::json!({ "old_epoch": old, "epoch": new }));
    Ok(ExitCode::SUCCESS)
}

fn rotate_signing_key(config_path: Option<PathBuf>, force: bool) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path.as_ref())?;
    let dir = &config.sync.state_dir;
    match sync::pki::rotate_signing_key(dir, force) {
        Ok(rollover) => {
            println!(
                "{}",
                serde_json::json!({
                    "previous_key_id": rollover.previous.to_string(),
                    "key_id": rollover.current.to_string(),
                    "state_dir": dir,
                    "next": "copy signing.pk8 and signing.previous.pk8 to every replica's state directory, then restart them",
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ sync::pki::PkiError::PreviousKeyKept(_)) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(exit::DATA))
        }
        Err(e) => Err(e.into()),
    }
}
