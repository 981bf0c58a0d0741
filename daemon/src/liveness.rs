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

/// What the session concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Conclusion {
    pub verdict: LivenessVerdict,
    /// The weakest cue's live score in [0, 1] (0.5 is a spoof threshold).
    pub score: Option<f32>,
    /// Stable code of the deciding cue ("planar-motion", "no-spoof-cue", ...).
    pub code: &'static str,
    /// The deciding cue with its figures, for the audit trail.
    pub reason: String,
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
            };
        }
        let result = self.track.result();
        let verdict = match result.verdict {
            Verdict::Live => LivenessVerdict::Live,
            Verdict::Spoof => LivenessVerdict::Spoof,
            Verdict::Unsure => LivenessVerdict::Unsure,
        };
        Conclusion { verdict, score: Some(result.score), code: result.reason.code(), reason: result.reason.to_string() }
    }
}
