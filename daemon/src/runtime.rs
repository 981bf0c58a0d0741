//! `run` (the kiosk service) and `replay` (the same pipeline over a file,
//! as fast as possible): threads and plumbing around [`Kiosk`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use facegate_protocol::DeviceId;
use prometheus_client::registry::Registry;

use crate::actuate::Actuators;
use crate::config::DaemonConfig;
use crate::freshness::{FreshnessGate, StaleWatch};
use crate::kiosk::{self, Kiosk, KioskError, Recorded};
use crate::metrics::{Metrics, SinkLabel};
use crate::service::{self, Progress};
use crate::source::{self, Frame, FrameSource, SourceError, SourceHealth, SourceState};

/// Frames waiting for the pipeline; a live source drops frames beyond this.
const FRAME_QUEUE: usize = 2;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Kiosk(#[from] KioskError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot start the HTTP endpoint on {addr}")]
    Http {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start sync")]
    Sync(#[source] crate::sync::SyncError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// Statistics of a finished replay.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ReplaySummary {
    pub frames: u64,
    pub unreadable_frames: u64,
    pub decisions: u64,
    pub seconds: f64,
    pub frames_per_second: f64,
}

fn device_id(config: &DaemonConfig) -> DeviceId {
    // check() validated it; fall back to a fixed id rather than panic.
    DeviceId::new(config.device.id.clone())
        .unwrap_or_else(|_| DeviceId::new("kiosk").unwrap_or_else(|_| unreachable!()))
}

/// Runs the pipeline over `config.source` as fast as possible, calling
/// `emit` for every decision; returns when the source ends.
pub fn replay(config: &DaemonConfig, mut emit: impl FnMut(&Recorded)) -> Result<ReplaySummary, RunError> {
    let pipeline = Arc::new(kiosk::load_pipeline(config)?);
    let shard = Arc::new(kiosk::open_shard(config, &pipeline)?);
    let engine = kiosk::engine_config(config, &pipeline)?;
    let mut kiosk = Kiosk::new(device_id(config), pipeline, shard, engine, None, None);
    let mut source = source::open(&config.source)?;
    let started = Instant::now();
    let mut summary = ReplaySummary::default();
    let mut last = Duration::ZERO;
    loop {
        let frame = match source.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(error @ SourceError::BadFrame { .. }) => {
                log::warn!(error:% = error; "skipping an unreadable frame");
                summary.unreadable_frames += 1;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        summary.frames += 1;
        last = frame.timestamp;
        for recorded in kiosk.handle(&frame)? {
            summary.decisions += 1;
            emit(&recorded);
        }
    }
    for recorded in kiosk.finish(last)? {
        summary.decisions += 1;
        emit(&recorded);
    }
    kiosk.shutdown();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.frames_per_second = if summary.seconds > 0.0 { summary.frames as f64 / summary.seconds } else { 0.0 };
    Ok(summary)
}

/// The kiosk service: capture thread → pipeline (this thread) → audit and
/// sinks; HTTP health and metrics on loopback; systemd notification and
/// watchdog. Returns after `shutdown` is set (SIGTERM) and the pipeline has
/// drained, or when a finite source ends.
pub fn run(config: &DaemonConfig, shutdown: Arc<AtomicBool>) -> Result<(), RunError> {
    let progress = Progress::default();
    progress.set_status("loading models".into());
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let freshness = match &config.sync.dir {
        Some(_) if config.sync.max_staleness_secs == 0 => {
            log::warn!(
                "sync.max-staleness-secs = 0: the door never turns stale and may admit people the centre removed while it is cut off"
            );
            FreshnessGate::off()
        }
        Some(_) => FreshnessGate::new(config.sync.max_staleness_ms(), kiosk::unix_millis()),
        None => FreshnessGate::off(),
    };
    let readiness = crate::http::Readiness::default().with_freshness(freshness.clone());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("facegate-io")
        .build()
        .map_err(RunError::Runtime)?;
    if let Some(addr) = config.http.listen {
        let listener =
            runtime.block_on(tokio::net::TcpListener::bind(addr)).map_err(|source| RunError::Http { addr, source })?;
        // The bound address: with port 0 the kernel picked it.
        let addr = listener.local_addr().unwrap_or(addr);
        runtime.spawn(crate::http::serve(listener, registry.clone(), readiness.clone(), shutdown.clone()));
        log::info!(addr:% = addr; "health and metrics endpoint listening");
    }
    runtime.spawn(watch_signals(shutdown.clone()));

    let pipeline = Arc::new(kiosk::load_pipeline(config)?);
    readiness.set("models", true);
    let shard = Arc::new(kiosk::open_shard(config, &pipeline)?);
    let report = shard.open_report();
    log::info!(identities = report.identities, templates = report.templates, open_ms = report.elapsed.as_millis() as u64; "gallery open");
    metrics.gallery_identities.set(report.identities as i64);
    metrics.gallery_templates.set(report.templates as i64);
    readiness.set("gallery", true);
    let engine = kiosk::engine_config(config, &pipeline)?;
    let actuators = Actuators::start(&config.actuation.sinks);
    let sink_counters = actuators.counters();
    let model_id = pipeline.model_id().to_owned();
    let mut kiosk =
        Kiosk::new(device_id(config), pipeline, shard.clone(), engine, Some(metrics.clone()), Some(actuators))
            .with_freshness(freshness.clone());
    if let Some(dir) = &config.sync.dir {
        let outbox = Arc::new(tokio::sync::Notify::new());
        kiosk = kiosk.with_outbox_notify(outbox.clone());
        let context = crate::sync::shell::SyncContext {
            dir: dir.clone(),
            shard: shard.clone(),
            key_path: config.gallery.key_path(),
            model_id,
            outbox,
            metrics: Some(metrics.clone()),
            shutdown: shutdown.clone(),
            connected: Arc::default(),
            config: config.sync.device_config(),
            freshness: freshness.clone(),
        };
        // Fail at start on an unusable provisioning directory, not later.
        crate::sync::Provisioned::load(dir).map_err(|e| RunError::Sync(e.into()))?;
        readiness.set_condition(crate::sync::supervise::SYNC_CONDITION, true);
        runtime.spawn(crate::sync::supervise::supervise(context, Some(readiness.clone())));
    } else {
        log::info!("no [sync] dir configured: standalone kiosk");
    }

    let (frames, source_health) = start_capture(config, shutdown.clone(), metrics.clone())?;
    let watchdog_health = source_health.clone();
    let watchdog = service::start_watchdog(
        progress.clone(),
        move || watchdog_health.state() == SourceState::Reconnecting,
        shutdown.clone(),
    );

    let mut decisions = 0u64;
    let mut last = Duration::ZERO;
    let mut last_status = Instant::now();
    let mut stale_watch = StaleWatch::default();
    while !shutdown.load(Ordering::Relaxed) {
        stale_watch.observe(&freshness, kiosk::unix_millis(), Some(&metrics));
        let frame = match frames.recv_timeout(Duration::from_millis(200)) {
            Ok(frame) => frame,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        last = frame.timestamp;
        decisions += kiosk.handle(&frame)?.len() as u64;
        progress.tick();
        if !progress.is_ready() {
            readiness.set("camera", true);
            progress.set_status(status_line(&shard, &source_health, &metrics, decisions));
            progress.ready();
        }
        if last_status.elapsed() > Duration::from_secs(5) {
            progress.set_status(status_line(&shard, &source_health, &metrics, decisions));
            metrics.source_reconnects.set(source_health.reconnects() as i64);
            for (name, counters) in &sink_counters {
                let label = SinkLabel { sink: name.clone() };
                metrics.sink_failures.get_or_create(&label).set(counters.failed.load(Ordering::Relaxed) as i64);
                metrics.sink_dropped.get_or_create(&label).set(counters.dropped.load(Ordering::Relaxed) as i64);
            }
            last_status = Instant::now();
        }
    }
    log::info!("draining: finishing the current attempt and flushing the outbox");
    service::notify_stopping();
    shutdown.store(true, Ordering::Relaxed);
    let _ = kiosk.finish(last)?;
    kiosk.shutdown();
    if let Some(watchdog) = watchdog {
        let _ = watchdog.join();
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

fn status_line(shard: &crate::store::LiveShard, health: &SourceHealth, metrics: &Metrics, decisions: u64) -> String {
    let stats = shard.read();
    // A camera that streams identical frames is not healthy (a stuck sensor or an injected still).
    let camera = if metrics.camera_frozen.get() == 1 { "frozen" } else { health.state().as_str() };
    format!("{} identities, camera {camera}, {} decisions", stats.identities.len(), decisions)
}

/// Starts the capture thread. A live source drops frames the pipeline has
/// no room for (counted); a replay waits for the pipeline.
fn start_capture(
    config: &DaemonConfig,
    shutdown: Arc<AtomicBool>,
    metrics: Metrics,
) -> Result<(Receiver<Frame>, SourceHealth), RunError> {
    let live = !config.source.is_finite();
    let (sender, receiver): (SyncSender<Frame>, Receiver<Frame>) = mpsc::sync_channel(FRAME_QUEUE);
    let health = SourceHealth::default();
    let thread_health = health.clone();
    let spec = config.source.clone();
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let mut source = source::resilient(spec).with_shutdown(shutdown.clone()).with_health(thread_health.clone());
            while !shutdown.load(Ordering::Relaxed) {
                metrics.source_up.set(i64::from(thread_health.state() == SourceState::Streaming));
                let frame = match source.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(error @ SourceError::BadFrame { .. }) => {
                        metrics.frames_unreadable.inc();
                        log::warn!(error:% = error; "unreadable frame skipped");
                        continue;
                    }
                    Err(error) => {
                        log::error!(error:% = error; "frame source failed for good");
                        break;
                    }
                };
                if live {
                    match sender.try_send(frame) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            metrics.frames_dropped.inc();
                        }
                        Err(TrySendError::Disconnected(_)) => break,
                    }
                } else if sender.send(frame).is_err() {
                    break;
                }
            }
            metrics.source_up.set(0);
        })
        .map_err(RunError::Runtime)?;
    Ok((receiver, health))
}

async fn watch_signals(shutdown: Arc<AtomicBool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        log::error!("cannot install signal handlers; SIGTERM will kill the daemon without draining");
        return;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: stopping"),
        _ = int.recv() => log::info!("SIGINT: stopping"),
    }
    shutdown.store(true, Ordering::Relaxed);
}
