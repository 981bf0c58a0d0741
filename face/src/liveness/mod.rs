//! Presentation-attack detection (liveness) before any match is reported.
//!
//! Per frame, [`LivenessChecker::observe`] measures cheap, model-free cues on
//! the face the detector found, and accumulates them in the walk-up's
//! [`LivenessTrack`], which yields a [`LivenessResult`]: `live`, `spoof` or
//! `unsure`, with scores and the reason.
//!
//! * **Screen pattern** ([`MoireMeasure`]): periodic colour structure (moiré,
//!   sub-pixel stripes) in the face at native resolution — 2-D FFT of the
//!   chroma against the luma.
//! * **Enclosing edges** ([`FrameMeasure`]): long straight edges on three or
//!   four sides of the face — a paper border or a screen bezel.
//! * **Face versus scene motion** ([`MotionMeasure`]): between frames ~0.2 s
//!   apart, do the face and its surroundings move as one plane (a photo or a
//!   screen in a hand)? Block-matched points, a homography against a "face
//!   moves, scene stays" model. Only ever a spoof cue.
//! * **Face deformation** ([`DeformationMeasure`]), the positive evidence:
//!   between frames ~0.2 s apart, does the face depart from one homography
//!   plus a bend about a vertical axis (a nose turning against the plane of
//!   the eyes and mouth), or change locally once that motion is undone — in
//!   the eye and mouth cells (a blink, a mouth), or anywhere while the face
//!   holds still? A flat picture, moved or not, does neither; a photo bent
//!   around a cylinder and turned changes only away from the eyes.
//! * **Frozen frames**: consecutive faces (nearly) identical — a frozen camera
//!   or an injected still. A fault, never live.
//! * **Operator model** ([`PadModel`]): a passive anti-spoofing ONNX model
//!   named by a `kind = "liveness"` manifest; none ships. Its score fuses with
//!   the engineered cues: any cue's spoof is a spoof, and live needs both the
//!   positive evidence and the model's agreement.
//!
//! The verdict (see [`LivenessTrack::result`]): frozen frames, or any spoof
//! cue → `spoof`; `live` only once `live-pairs` frame pairs showed a
//! deforming face; a face that moved rigidly for `rigid-pairs` pairs without
//! ever deforming → `spoof`; otherwise `unsure`. **No positive evidence is
//! never live**: the kiosk refuses a track not shown live within its
//! decision window.
//!
//! The cues need the frame, not the aligned chip: texture at native
//! resolution, motion of what surrounds the face. All of it is pure Rust.
//!
//! [`held_out`] measures the whole on the attack corpus [`corpus`] generates
//! from dev photos and on the dev clips, thresholds chosen on one half of the
//! identities and figures reported on the other — APCER per species and
//! BPCER, as `facegate-daemon eval liveness` prints them; [`eval`] is the
//! per-file evaluation of labelled stills and clips ([`dataset`]).

mod bend;
mod config;
pub mod corpus;
pub mod dataset;
mod deformation;
pub mod eval;
mod fft;
mod frame;
pub mod held_out;
mod homography;
mod model;
mod moire;
mod motion;
mod sampling;
mod track;

use std::time::Duration;

use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use config::LivenessConfig;
pub use deformation::DeformationMeasure;
pub use frame::FrameMeasure;
pub use model::PadModel;
pub use moire::MoireMeasure;
pub use motion::MotionMeasure;
pub use track::{LivenessResult, LivenessTrack, Reason, Verdict};

use crate::detect::Detection;
use crate::error::InferenceError;

/// The liveness configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum LivenessError {
    #[error("invalid liveness configuration: {0}")]
    Config(String),
}

/// Everything measured on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameCues {
    /// `None` when the frame is smaller than the smallest crop (32 px).
    pub moire: Option<MoireMeasure>,
    pub frame: FrameMeasure,
    /// The operator model's live probability, when one is loaded.
    pub model: Option<f32>,
    /// The comparison with a frame about `lag-ms` earlier in the same track,
    /// when there is one (only [`LivenessChecker::observe`] fills it).
    pub motion: Option<MotionMeasure>,
    /// The face's deformation against a frame about `lag-ms` earlier (only
    /// [`LivenessChecker::observe`] fills it).
    pub deformation: Option<DeformationMeasure>,
    /// Mean absolute luma difference of the face from the previous frame's
    /// (grey levels; only [`LivenessChecker::observe`] fills it).
    pub still_difference: Option<f32>,
}

/// The cues' shared, immutable parts (FFT plans, the operator model) and the
/// configuration; one per kiosk, shared by reference across tracks and threads.
#[derive(Debug)]
pub struct LivenessChecker {
    config: LivenessConfig,
    moire: moire::MoireAnalyzer,
    model: Option<PadModel>,
}

impl LivenessChecker {
    /// A checker with `config` (checked) and an optional operator model.
    pub fn new(config: LivenessConfig, model: Option<PadModel>) -> Result<Self, LivenessError> {
        config.check().map_err(LivenessError::Config)?;
        Ok(Self { config, moire: moire::MoireAnalyzer::new(), model })
    }

    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    /// The operator model's id, when one is loaded.
    pub fn model_id(&self) -> Option<&str> {
        self.model.as_ref().map(PadModel::id)
    }

    /// An empty track for a new walk-up.
    pub fn track(&self) -> LivenessTrack {
        LivenessTrack::new(self.config, self.model.is_some())
    }

    /// The single-frame cues (texture and model) of the face `detection`
    /// found in `frame`. Fails only when the operator model fails to run. A
    /// detection that is not [measurable](measurable()) gives empty cues.
    pub fn frame_cues(&self, frame: &RgbImage, detection: &Detection) -> Result<FrameCues, InferenceError> {
        if !measurable(frame, detection) {
            return Ok(FrameCues {
                moire: None,
                frame: FrameMeasure::default(),
                model: None,
                motion: None,
                deformation: None,
                still_difference: None,
            });
        }
        let model = match &self.model {
            Some(model) => Some(model.live_probability(frame, &detection.bbox)?),
            None => None,
        };
        Ok(FrameCues {
            moire: self.moire.measure(frame, &detection.bbox),
            frame: frame::measure(frame, &detection.bbox),
            model,
            motion: None,
            deformation: None,
            still_difference: None,
        })
    }

    /// Measures one frame of a track (`at`: the frame's time on any monotonic
    /// clock; frames must arrive in order) — texture, model, and motion
    /// against an earlier frame of the same track — and adds it to `track`.
    /// Returns what was measured; read the verdict with [`LivenessTrack::result`].
    /// A detection that is not [measurable](measurable()) leaves the track
    /// unchanged.
    pub fn observe(
        &self,
        track: &mut LivenessTrack,
        frame: &RgbImage,
        detection: &Detection,
        at: Duration,
    ) -> Result<FrameCues, InferenceError> {
        let mut cues = self.frame_cues(frame, detection)?;
        if !measurable(frame, detection) {
            return Ok(cues);
        }
        cues.motion = track.compare_motion(frame, detection, at);
        cues.deformation = track.compare_deformation(frame, detection, at);
        cues.still_difference = track.still_difference(frame);
        let face = deformation::sample_frame(frame, detection, at);
        track.push(&cues, motion::sample_frame(frame, detection, at), face, at);
        Ok(cues)
    }

    /// What the single-frame cues say about one still image (a photo): spoof
    /// when a texture cue or the model says so, `unsure` otherwise — one
    /// image holds no positive evidence of life, so it is never live. A kiosk
    /// decides on tracks, not on stills.
    /// A detection that is not [measurable](measurable()) is `unsure`.
    pub fn assess_still(&self, frame: &RgbImage, detection: &Detection) -> Result<LivenessResult, InferenceError> {
        if !measurable(frame, detection) {
            return Ok(self.track().result());
        }
        let cues = self.frame_cues(frame, detection)?;
        Ok(LivenessTrack::still(self.config, &cues))
    }
}

/// Whether the cues can be measured on `detection` in `frame`: a non-empty
/// frame, and a finite box of positive size whose longer side is at most
/// [`MAX_BOX_FRAMES`] times the frame's longer side, with finite landmarks.
/// A detector never gives anything else; the check keeps arbitrary input
/// from costing unbounded time.
pub fn measurable(frame: &RgbImage, detection: &Detection) -> bool {
    let b = &detection.bbox;
    let limit = MAX_BOX_FRAMES * frame.width().max(frame.height()) as f32;
    frame.width() > 0
        && frame.height() > 0
        && [b.x, b.y, b.width, b.height].iter().all(|v| v.is_finite())
        && b.width > 0.0
        && b.height > 0.0
        && b.width.max(b.height) <= limit
        && detection.landmarks.0.iter().all(|p| p.x.is_finite() && p.y.is_finite())
}

/// See [`measurable`].
pub const MAX_BOX_FRAMES: f32 = 4.0;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{BoundingBox, Landmarks, Point};
    use image::Rgb;

    fn detection(x: f32, y: f32, w: f32, h: f32) -> Detection {
        let l = |fx: f32, fy: f32| Point::new(x + fx * w, y + fy * h);
        Detection {
            bbox: BoundingBox { x, y, width: w, height: h },
            landmarks: Landmarks([l(0.3, 0.4), l(0.7, 0.4), l(0.5, 0.6), l(0.35, 0.8), l(0.65, 0.8)]),
            score: 0.9,
        }
    }

    #[test]
    fn no_frame_size_or_box_makes_the_cues_panic() {
        let checker = LivenessChecker::new(LivenessConfig::default(), None).unwrap();
        let frames = [(0, 0), (1, 1), (3, 2), (31, 31), (32, 32), (64, 48), (400, 300)].map(|(w, h)| {
            RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7 % 256) as u8, (y * 13 % 256) as u8, ((x + y) % 256) as u8]))
        });
        let (nan, inf) = (f32::NAN, f32::INFINITY);
        let mut boxes = vec![
            detection(0.0, 0.0, 20.0, 24.0),
            detection(-30.0, -30.0, 40.0, 40.0),
            detection(380.0, 280.0, 60.0, 80.0),
            detection(10.0, 10.0, 0.0, 0.0),
            detection(5.0, 5.0, 1.0, 1.0),
            detection(-1e6, -1e6, 3e6, 3e6),
            detection(0.0, 0.0, 1000.0, 1000.0),
            detection(nan, 0.0, 50.0, 50.0),
            detection(0.0, 0.0, inf, 50.0),
            detection(1e30, 1e30, 1e30, 1e30),
        ];
        let mut odd = detection(10.0, 10.0, 50.0, 50.0);
        odd.landmarks.0[2] = Point::new(nan, 3.0);
        boxes.push(odd);
        let mut collapsed = detection(10.0, 10.0, 50.0, 50.0);
        collapsed.landmarks = Landmarks([Point::new(20.0, 20.0); 5]);
        boxes.push(collapsed);
        for frame in &frames {
            for detection in &boxes {
                let mut track = checker.track();
                for i in 0..12u64 {
                    // Alternate boxes so that motion is compared across odd geometry too.
                    let d = if i % 2 == 0 { detection } else { &boxes[0] };
                    checker.observe(&mut track, frame, d, Duration::from_millis(40 * i)).unwrap();
                }
                let _ = track.result();
                let still = checker.assess_still(frame, detection).unwrap();
                if !measurable(frame, detection) {
                    assert_eq!(still.verdict, Verdict::Unsure);
                }
            }
        }
        assert!(!measurable(&frames[6], &boxes[5]) && measurable(&frames[6], &boxes[2]));
    }
}
