//! Putting the server together from its configuration: database, pipeline,
//! index, engine, background tasks, router.

use std::sync::Arc;
use std::time::Duration;

use facegate_face::{FacePipeline, PipelineOptions};

use crate::api::{AppState, Limits};
use crate::auth::{LoginLimiter, TokenKeys};
use crate::config::{Config, ConfigError};
use crate::crypto::{CryptoError, PhotoCipher};
use crate::engine::{Engine, EngineParts, Thresholds};
use crate::faces::FaceWorkers;
use crate::index::HnswParams;
use crate::master::{MasterError, MasterIndex, follow};
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::store::{Store, StoreError};

/// How long start-up waits for MongoDB.
const DATABASE_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot load the face models: {0}")]
    Models(#[from] facegate_face::ModelError),
    #[error("the embedder manifest has no `{0}` threshold and the configuration sets none")]
    Threshold(&'static str),
    #[error("MongoDB: {0}")]
    Store(#[from] StoreError),
    #[error("master index: {0}")]
    Index(#[from] MasterError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("cannot start the face pipeline threads: {0}")]
    Threads(std::io::Error),
}

/// A running server's parts (the router is built from `state`).
#[derive(Debug)]
pub struct App {
    pub state: AppState,
    pub store: Store,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Stops the background tasks (follower, database probe).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Loads the face pipeline named by the configuration.
pub fn load_pipeline(config: &Config) -> Result<Arc<FacePipeline>, AppError> {
    let env_models = std::env::var("FACEGATE_MODELS").ok();
    let dir = config
        .enrollment
        .models
        .clone()
        .unwrap_or_else(|| facegate_face::models::default_models_dir(env_models.as_deref()));
    Ok(Arc::new(FacePipeline::load(&dir, &PipelineOptions::default())?))
}

/// The engine's thresholds: configuration first, then the model manifest.
pub fn thresholds(config: &Config, pipeline: &FacePipeline) -> Result<Thresholds, AppError> {
    let t = &pipeline.embedder_manifest().thresholds;
    let verify = t.match_threshold.ok_or(AppError::Threshold("match"))?;
    let dedup = config.enrollment.dedup_threshold.or(t.dedup).ok_or(AppError::Threshold("dedup"))?;
    // Photos of one person at enrollment (the same rule as the kiosk's
    // `gallery add`).
    let same_person = config
        .enrollment
        .same_person_threshold
        .or_else(|| facegate_face::thresholds::same_person_threshold(t))
        .unwrap_or(verify);
    Ok(Thresholds { dedup, same_person, verify, margin: t.margin.unwrap_or(0.0) })
}

/// Connects, prepares the database, loads the index and starts the
/// background tasks. `secret` signs tokens; `cipher` seals photos.
pub async fn start(
    config: &Config,
    secret: &[u8],
    cipher: PhotoCipher,
    pipeline: Arc<FacePipeline>,
    readiness: Readiness,
) -> Result<App, AppError> {
    let metrics = Arc::new(Metrics::new());
    metrics.pool_max.set(i64::from(config.mongodb.max_pool_size));
    let database = readiness.register("mongodb");
    let index_ready = readiness.register("index");
    let store = Store::connect(
        &config.mongodb.uri,
        &config.mongodb.database,
        config.mongodb.max_pool_size,
        Duration::from_secs(config.mongodb.server_selection_timeout_secs),
        Some(metrics.pool_events()),
    )
    .await?;
    let started = tokio::time::Instant::now();
    loop {
        match store.init().await {
            Ok(()) => break,
            Err(e @ StoreError::SchemaTooNew { .. }) => return Err(e.into()),
            Err(e) if started.elapsed() < DATABASE_PATIENCE => {
                log::warn!(error:% = e; "MongoDB not ready yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    database.set(true);
    log::info!(database = config.mongodb.database.as_str(), schema = crate::store::SCHEMA_VERSION; "database ready");

    let thresholds = thresholds(config, &pipeline)?;
    let dim = pipeline.embedder_manifest().output.as_ref().map_or(128, |o| o.dim);
    let model_id = pipeline.model_id().to_string();
    let params = HnswParams { ef_search: config.index.ef_search, ..HnswParams::default() };
    let index = Arc::new(MasterIndex::new(&model_id, dim, config.index.kind, config.index.hnsw_above, params));
    let stats = index.rebuild(&store).await?;
    metrics.index_rebuild_seconds.set(stats.seconds);
    metrics.index_size(stats.templates, stats.identities, stats.seq);
    log::info!(templates = stats.templates, identities = stats.identities, kind = stats.kind,
        seconds = stats.seconds, seq = stats.seq; "master index loaded");
    index_ready.set(true);

    let faces = FaceWorkers::start(Arc::clone(&pipeline), config.enrollment.workers, config.enrollment.queue)
        .map_err(AppError::Threads)?;
    let engine = Arc::new(Engine::new(EngineParts {
        store: store.clone(),
        faces,
        index: Arc::clone(&index),
        metrics: Arc::clone(&metrics),
        cipher,
        thresholds,
        max_photos: config.enrollment.max_photos,
        max_photo_bytes: config.enrollment.max_photo_bytes,
    }));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = Vec::new();
    {
        let metrics = Arc::clone(&metrics);
        tasks.push(tokio::spawn(follow(
            Arc::clone(&index),
            store.clone(),
            Duration::from_millis(config.index.follow_interval_ms),
            until_stopped(stopped.clone()),
            move |index: &MasterIndex| {
                let (t, i, _) = index.size();
                metrics.index_size(t, i, index.applied_seq());
            },
        )));
    }
    {
        let store = store.clone();
        let shutdown = until_stopped(stopped.clone());
        tasks.push(tokio::spawn(async move {
            let mut shutdown = std::pin::pin!(shutdown);
            let mut ticker = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    () = &mut shutdown => return,
                    _ = ticker.tick() => {}
                }
                database.set(store.ping().await.is_ok());
            }
        }));
    }

    let keys = Arc::new(TokenKeys::hs256(secret, Duration::from_secs(config.auth.token_ttl_secs), &config.auth.issuer));
    let state = AppState {
        engine,
        keys,
        limiter: Arc::new(LoginLimiter::new(config.auth.login_attempts_per_minute)),
        readiness,
        metrics,
        limits: Limits { json_bytes: config.server.max_json_bytes, upload_bytes: config.max_upload_bytes() },
    };
    Ok(App { state, store, tasks, stop })
}
