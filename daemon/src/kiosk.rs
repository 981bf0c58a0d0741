//! A kiosk: the decision engine over the gallery shard, with every decision
//! written to the audit outbox before anything is actuated. Shared by
//! `run` (camera, systemd, HTTP) and `replay` (files, as fast as possible).

use std::sync::Arc;
use std::time::Duration;

use facegate_face::thresholds::OpenSetRule;
use facegate_face::{FaceError, FacePipeline, InferenceError, PipelineOptions, Template};
use facegate_protocol::{AuditEvent, Decision, DeviceId, IdentityId};

use crate::actuate::{Actuation, Actuators};
use crate::config::{DaemonConfig, DecisionKind};
use crate::engine::{DecisionRecord, Engine, EngineConfig, FrameTimings, GalleryLookup, ThresholdPolicy};
use crate::metrics::{DecisionLabel, LivenessLabel, Metrics};
use crate::source::Frame;
use crate::store::{GalleryModel, LiveShard, StoreConfig, StoreError};
use crate::track::TrackerConfig;

/// Why the kiosk could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum KioskError {
    #[error("cannot load the models")]
    Models(#[source] facegate_face::ModelError),
    #[error("cannot open the gallery")]
    Store(#[source] StoreError),
    #[error("cannot create {path}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the face pipeline failed")]
    Inference(#[source] InferenceError),
    #[error("cannot set up liveness")]
    Liveness(#[source] crate::liveness::LivenessSetupError),
    #[error("the manifest of {0} has no calibrated match threshold")]
    NoThreshold(String),
}

impl GalleryLookup for LiveShard {
    fn identify(&self, probe: &Template) -> Result<Vec<crate::engine::Identified>, FaceError> {
        let view = self.read();
        let top = view.gallery.search(probe, 2)?;
        Ok(top
            .into_iter()
            .map(|m| {
                let record = view.identities.get(&m.label).cloned();
                (m, record)
            })
            .collect())
    }
    fn identities(&self) -> usize {
        self.read().gallery.identities()
    }
}

/// A decision as recorded: the engine's record and its audit sequence
/// number (`None` when the outbox write failed: nothing was actuated).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub record: DecisionRecord,
    pub audit_seq: Option<u64>,
}

/// Loads the face pipeline the configuration describes.
pub fn load_pipeline(config: &DaemonConfig) -> Result<FacePipeline, KioskError> {
    let m = &config.models;
    let dir = m.dir.clone().unwrap_or_else(|| facegate_face::models::default_models_dir(None));
    let options = PipelineOptions {
        detector_id: m.detector.clone(),
        embedder_id: m.embedder.clone(),
        detector_precision: m.detector_precision,
        embedder_precision: m.embedder_precision,
        mirror: m.mirror,
        detector: Some(facegate_face::DetectorOverrides {
            score_threshold: m.detector_score,
            max_side: m.detector_max_side,
            min_side: None,
        }),
        quality: Some(config.quality),
    };
    FacePipeline::load(&dir, &options).map_err(KioskError::Models)
}

/// Opens the encrypted gallery shard for the pipeline's model, creating the
/// database and its key on first use and finishing a key rotation a crash
/// interrupted.
pub fn open_shard(config: &DaemonConfig, pipeline: &FacePipeline) -> Result<LiveShard, KioskError> {
    let key_path = config.gallery.key_path();
    if let Some(parent) = key_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|source| KioskError::StateDir { path: parent.to_path_buf(), source })?;
    }
    let model = GalleryModel { id: pipeline.model_id().to_owned(), dim: pipeline.embedder().dim() };
    crate::store::open_with_key_file(&StoreConfig::new(&config.gallery.db, model), &key_path).map_err(KioskError::Store)
}

/// The engine settings from the configuration and the model's calibration.
pub fn engine_config(config: &DaemonConfig, pipeline: &FacePipeline) -> Result<EngineConfig, KioskError> {
    let d = &config.decision;
    let shipped = pipeline.open_set_rule().ok_or_else(|| KioskError::NoThreshold(pipeline.model_id().to_owned()))?;
    let margin = d.margin.unwrap_or(shipped.margin);
    let policy = match d.target_fpir {
        Some(fpir) => ThresholdPolicy::TargetFpir { fpir, margin },
        None => ThresholdPolicy::Fixed(OpenSetRule { threshold: d.threshold.unwrap_or(shipped.threshold), margin }),
    };
    Ok(EngineConfig {
        frames: d.frames,
        window: Duration::from_millis(d.window_ms),
        cooldown: Duration::from_millis(d.cooldown_ms),
        tracker: TrackerConfig { min_iou: d.track_iou, timeout: Duration::from_millis(d.track_timeout_ms) },
        policy,
        liveness: crate::liveness::checker(config.liveness, config.models.liveness.as_deref())
            .map_err(KioskError::Liveness)?,
    })
}

/// Engine + shard + sinks for one camera.
pub struct Kiosk {
    device: DeviceId,
    model_id: String,
    engine: Engine,
    shard: Arc<LiveShard>,
    metrics: Option<Metrics>,
    actuators: Option<Actuators>,
    /// Told after every audit append (the sync shell drains the outbox).
    outbox: Option<Arc<tokio::sync::Notify>>,
}

impl std::fmt::Debug for Kiosk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kiosk").field("device", &self.device).finish_non_exhaustive()
    }
}

impl Kiosk {
    pub fn new(
        device: DeviceId,
        pipeline: Arc<FacePipeline>,
        shard: Arc<LiveShard>,
        config: EngineConfig,
        metrics: Option<Metrics>,
        actuators: Option<Actuators>,
    ) -> Self {
        let model_id = pipeline.model_id().to_owned();
        let engine = Engine::new(pipeline, shard.clone(), config);
        Self { device, model_id, engine, shard, metrics, actuators, outbox: None }
    }

    /// Denies would-be grants while `gate` says the gallery is stale (except
    /// to `offline_access` identities); a kiosk without it never is.
    pub fn with_freshness(mut self, gate: crate::freshness::FreshnessGate) -> Self {
        self.engine.set_freshness(gate);
        self
    }

    /// Notifies `outbox` after every audit append.
    pub fn with_outbox_notify(mut self, outbox: Arc<tokio::sync::Notify>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    pub fn shard(&self) -> &Arc<LiveShard> {
        &self.shard
    }

    /// Runs one frame through the engine and records its decisions.
    pub fn handle(&mut self, frame: &Frame) -> Result<Vec<Recorded>, KioskError> {
        let outcome = self.engine.process(&frame.image, frame.timestamp).map_err(KioskError::Inference)?;
        if let Some(metrics) = &self.metrics {
            metrics.frames.inc();
            observe(metrics, &outcome.timings);
        }
        Ok(outcome.decisions.into_iter().map(|d| self.record(d)).collect())
    }

    /// Decides what is still open (end of a replay, shutdown).
    pub fn finish(&mut self, at: Duration) -> Result<Vec<Recorded>, KioskError> {
        let decisions = self.engine.finish(at).map_err(KioskError::Inference)?;
        Ok(decisions.into_iter().map(|d| self.record(d)).collect())
    }

    /// Writes the audit event durably, then (and only then) actuates.
    fn record(&mut self, record: DecisionRecord) -> Recorded {
        let event = AuditEvent {
            device: self.device.clone(),
            // Both set by the store.
            epoch: 0,
            seq: 0,
            at: unix_millis(),
            decision: record.decision,
            identity: record.identity.clone(),
            score: record.score,
            liveness: record.liveness,
            liveness_score: record.liveness_score,
            reason: Some(audit_reason(&record)),
            model_id: self.model_id.clone(),
            frames: record.frames,
            timings_ms: record.timings,
        };
        let audit_seq = match self.shard.store().append_audit(event) {
            Ok(seq) => {
                if let Some(outbox) = &self.outbox {
                    outbox.notify_one();
                }
                Some(seq)
            }
            Err(error) => {
                log::error!(error:% = error, decision = record.decision.as_str(), track = record.track; "cannot write the audit event: the decision is not actuated");
                if let Some(metrics) = &self.metrics {
                    metrics.audit_write_failures.inc();
                }
                None
            }
        };
        if let Some(metrics) = &self.metrics {
            metrics.decisions.get_or_create(&DecisionLabel { decision: record.decision.as_str() }).inc();
            if record.decision == Decision::Spoof {
                metrics.liveness_rejections.inc();
            }
            if record.stale_gallery {
                metrics.stale_denials.inc();
            }
            metrics.liveness_verdicts.get_or_create(&LivenessLabel { reason: record.liveness_code }).inc();
            let frozen = record.liveness_code == "frozen";
            if frozen {
                metrics.camera_frozen_attempts.inc();
                log::warn!(track = record.track; "camera frames frozen: consecutive frames identical (a stuck camera or an injected still)");
            }
            metrics.camera_frozen.set(i64::from(frozen));
            if let Ok(depth) = self.shard.store().outbox_depth() {
                metrics.outbox_depth.set(depth as i64);
            }
        }
        log::info!(
            decision = record.decision.as_str(),
            identity = record.identity.as_ref().map(IdentityId::as_str),
            score = record.score,
            track = record.track,
            audit_seq = audit_seq,
            reason = record.reason.as_str();
            "door decision"
        );
        if let (Some(seq), Some(actuators)) = (audit_seq, &self.actuators) {
            actuators.dispatch(&Actuation {
                decision: kind(record.decision),
                device: self.device.to_string(),
                identity: record.identity.as_ref().map(ToString::to_string),
                name: record.name.clone(),
                score: record.score,
                audit_seq: seq,
            });
        }
        Recorded { record, audit_seq }
    }

    /// Lets queued actuations finish and flushes the store.
    pub fn shutdown(self) {
        if let Some(actuators) = self.actuators {
            actuators.shutdown();
        }
    }
}

/// The decision's reason with the liveness cues' figures appended, within
/// the protocol's bound on a reason.
fn audit_reason(record: &DecisionRecord) -> String {
    let mut reason = record.reason.clone();
    if let Some(cues) = &record.liveness_cues {
        reason.push(' ');
        reason.push_str(&cues.summary(record.liveness_code));
    }
    if reason.len() > facegate_protocol::MAX_REASON_BYTES {
        let mut end = facegate_protocol::MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

fn kind(decision: Decision) -> DecisionKind {
    match decision {
        Decision::Grant => DecisionKind::Grant,
        Decision::Deny => DecisionKind::Deny,
        Decision::Unknown => DecisionKind::Unknown,
        Decision::Spoof => DecisionKind::Spoof,
    }
}

fn observe(metrics: &Metrics, t: &FrameTimings) {
    metrics.observe_stage("detect", t.detect_ms);
    for (stage, ms) in
        [("align", t.align_ms), ("liveness", t.liveness_ms), ("embed", t.embed_ms), ("match", t.match_ms)]
    {
        if ms > 0.0 {
            metrics.observe_stage(stage, ms);
        }
    }
}

pub fn unix_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
