//! The daemon's side of presentation-attack detection: one session per
//! walk-up over the face crate's [`LivenessChecker`], fed every frame in which
//! the tracked face was seen.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use facegate_face::liveness::{LivenessChecker, LivenessError, LivenessTrack, PadModel, Verdict};
use facegate_face::{AssessedFace, ModelError, RgbImage};
use facegate_protocol::LivenessVerdict;

pub use facegate_face::liveness::LivenessConfig;

/// Why the liveness checker could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LivenessSetupError {
    #[error(transparent)]
    Config(#[from] LivenessError),
    #[error("cannot load the liveness model {path}")]
    Model {
        path: String,
        #[source]
        source: ModelError,
    },
}

/// The checker shared by every attempt of one camera.
pub fn checker(config: LivenessConfig, model: Option<&Path>) -> Result<Arc<LivenessChecker>, LivenessSetupError> {
    let model = model
        .map(|path| {
            PadModel::load_path(path, None)
                .map_err(|source| LivenessSetupError::Model { path: path.display().to_string(), source })
        })
        .transpose()?;
    Ok(Arc::new(LivenessChecker::new(config, model)?))
}

/// Every cue's figure at the decision, for the decision's JSON and audit
/// event: live scores in [0, 1] (0.5 is a cue's threshold) and the raw
/// figures they come from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CueScores {
    /// Positive evidence (deforming face): live from 0.5.
    pub evidence: f32,
    /// Texture (screen pattern, enclosing edges).
    pub texture: f32,
    /// Face-versus-scene planar motion, once measured.
    pub temporal: Option<f32>,
    /// The operator model's live probability, when one is loaded.
    pub model: Option<f32>,
    pub moire: f32,
    pub edges: f32,
    /// Frame pairs that showed a deforming face, and a rigid one.
    pub live_pairs: usize,
    pub rigid_pairs: usize,
    /// Fraction of consecutive frames that were identical.
    pub frozen: f32,
    pub frames: usize,
}

impl CueScores {
    /// One line for the audit event's reason (bounded, a few dozen bytes).
    pub fn summary(&self, code: &str) -> String {
        let optional = |v: Option<f32>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        format!(
            "[liveness decided-by={code} evidence={:.2} live-pairs={} rigid-pairs={} texture={:.2} moire={:.2} edges={:.2} temporal={} model={} frozen={:.2}]",
            self.evidence,
            self.live_pairs,
            self.rigid_pairs,
            self.texture,
            self.moire,
            self.edges,
            optional(self.temporal),
            optional(self.model),
            self.frozen
        )
    }
}

/// What the session concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Conclusion {
    pub verdict: LivenessVerdict,
    /// The weakest cue's live score in [0, 1] (0.5 is a spoof threshold).
    pub score: Option<f32>,
    /// Stable code of the deciding cue ("frozen", "face-deformed",
    /// "no-live-evidence", "rigid-face", ...).
    pub code: &'static str,
    /// The deciding cue with its figures, for the audit trail.
    pub reason: String,
    /// Every cue's figure; `None` when the operator model failed.
    pub cues: Option<CueScores>,
}

/// One walk-up's liveness state.
#[derive(Debug)]
pub struct LivenessSession {
    checker: Arc<LivenessChecker>,
    track: LivenessTrack,
    /// The operator model failed on a frame: never conclude live.
    failed: Option<String>,
}

impl LivenessSession {
    pub fn new(checker: Arc<LivenessChecker>) -> Self {
        let track = checker.track();
        Self { checker, track, failed: None }
    }

    /// Adds one frame (`at`: stream time) in which the tracked face was seen.
    pub fn observe(&mut self, image: &RgbImage, face: &AssessedFace, at: Duration) {
        if let Err(error) = self.checker.observe(&mut self.track, image, &face.detection, at) {
            log::warn!(error:% = error; "liveness model failed on a frame");
            self.failed = Some(error.to_string());
        }
    }

    /// Whether the verdict is final (live or spoof): the attempt may be
    /// decided as soon as it also has its frames.
    pub fn conclusive(&self) -> bool {
        self.failed.is_some() || self.track.result().verdict != Verdict::Unsure
    }

    pub fn conclusion(&self) -> Conclusion {
        if let Some(error) = &self.failed {
            return Conclusion {
                verdict: LivenessVerdict::Unsure,
                score: None,
                code: "model-failed",
                reason: format!("the liveness model failed: {error}"),
                cues: None,
            };
        }
        let result = self.track.result();
        let verdict = match result.verdict {
            Verdict::Live => LivenessVerdict::Live,
            Verdict::Spoof => LivenessVerdict::Spoof,
            Verdict::Unsure => LivenessVerdict::Unsure,
        };
        let cues = CueScores {
            evidence: result.evidence,
            texture: result.texture,
            temporal: result.temporal,
            model: result.model,
            moire: result.moire,
            edges: result.edges,
            live_pairs: result.live_pairs,
            rigid_pairs: result.rigid_pairs,
            frozen: result.frozen,
            frames: result.frames,
        };
        Conclusion {
            verdict,
            score: Some(result.score),
            code: result.reason.code(),
            reason: result.reason.to_string(),
            cues: Some(cues),
        }
    }
}
