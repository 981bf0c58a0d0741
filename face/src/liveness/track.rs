//! One walk-up's accumulated cues and the verdict rule.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::FrameCues;
use super::config::LivenessConfig;
use super::motion::{self, MotionSample};
use crate::detect::Detection;

/// The liveness verdict; the daemon maps it onto the protocol's
/// `LivenessVerdict` (same three names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Live,
    Spoof,
    Unsure,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Spoof => "spoof",
            Self::Unsure => "unsure",
        }
    }
}

/// Why the verdict is what it is, with the figures that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Reason {
    /// Fewer frames than `min-frames` so far.
    Collecting { frames: usize, needed: usize },
    /// Periodic colour structure of a screen (median moiré score).
    ScreenPattern { score: f32, threshold: f32 },
    /// Straight edges enclose the face (median third-line support).
    EnclosingEdges { support: f32, threshold: f32 },
    /// Face and surroundings moved as one plane (mean evidence over pairs).
    PlanarMotion { evidence: f32, pairs: usize },
    /// The operator model says spoof (median live probability).
    ModelSpoof { probability: f32 },
    /// The operator model is not confident enough either way.
    ModelUnsure { probability: f32 },
    /// The face moved against a static scene (mean evidence over pairs).
    MovedAgainstScene { evidence: f32, pairs: usize },
    /// No spoof cue for `elapsed_ms` (a person standing still).
    NoSpoofCue { elapsed_ms: u32 },
    /// No spoof cue yet; not enough time or motion to say live.
    Waiting { elapsed_ms: u32, needed_ms: u32 },
}

impl Reason {
    /// A short stable code for audit records and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Collecting { .. } => "collecting",
            Self::ScreenPattern { .. } => "screen-pattern",
            Self::EnclosingEdges { .. } => "enclosing-edges",
            Self::PlanarMotion { .. } => "planar-motion",
            Self::ModelSpoof { .. } => "model-spoof",
            Self::ModelUnsure { .. } => "model-unsure",
            Self::MovedAgainstScene { .. } => "moved-against-scene",
            Self::NoSpoofCue { .. } => "no-spoof-cue",
            Self::Waiting { .. } => "waiting",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Collecting { frames, needed } => write!(f, "{frames} of {needed} frames seen"),
            Self::ScreenPattern { score, threshold } => {
                write!(f, "screen pattern in the face (moiré score {score:.2}, spoof from {threshold:.2})")
            }
            Self::EnclosingEdges { support, threshold } => write!(
                f,
                "straight edges enclose the face (third edge {support:.2} face widths long, spoof from {threshold:.2})"
            ),
            Self::PlanarMotion { evidence, pairs } => {
                write!(f, "face and surroundings moved as one plane (evidence {evidence:.3} over {pairs} frame pairs)")
            }
            Self::ModelSpoof { probability } => {
                write!(f, "the liveness model says spoof (live probability {probability:.2})")
            }
            Self::ModelUnsure { probability } => {
                write!(f, "the liveness model is not sure (live probability {probability:.2})")
            }
            Self::MovedAgainstScene { evidence, pairs } => {
                write!(f, "the face moved against a static scene (evidence {evidence:.3} over {pairs} frame pairs)")
            }
            Self::NoSpoofCue { elapsed_ms } => write!(f, "no spoof cue in {elapsed_ms} ms"),
            Self::Waiting { elapsed_ms, needed_ms } => {
                write!(f, "no spoof cue yet ({elapsed_ms} of {needed_ms} ms without motion evidence)")
            }
        }
    }
}

/// A track's verdict with its scores. Scores are "live" scores in [0, 1]:
/// 0.5 is a cue's spoof threshold, lower is more spoof-like.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LivenessResult {
    pub verdict: Verdict,
    /// The weakest of the cue scores below.
    pub score: f32,
    /// Face-versus-scene motion: `None` until `min-motion-pairs` informative
    /// frame pairs were seen; 0.5 at `planar-spoof`, 1 at `scene-live`.
    pub temporal: Option<f32>,
    /// Texture (screen pattern and enclosing edges): 1 with no sign of either,
    /// 0.5 at the nearer spoof threshold.
    pub texture: f32,
    /// The operator model's median live probability, when one is loaded.
    pub model: Option<f32>,
    /// The track's median moiré score (see [`super::MoireMeasure`]).
    pub moire: f32,
    /// The track's median enclosing-edge support (see [`super::FrameMeasure`]).
    pub edges: f32,
    pub reason: Reason,
    /// Frames observed.
    pub frames: usize,
    /// Time from the first to the last frame observed.
    pub elapsed_ms: u32,
}

/// The state of one walk-up: recent cues and frames kept for motion.
#[derive(Debug, Clone)]
pub struct LivenessTrack {
    config: LivenessConfig,
    has_model: bool,
    first: Option<Duration>,
    last: Duration,
    frames: usize,
    moire: VecDeque<f32>,
    edges: VecDeque<f32>,
    model: VecDeque<f32>,
    motion: VecDeque<f32>,
    samples: VecDeque<MotionSample>,
}

impl LivenessTrack {
    pub(crate) fn new(config: LivenessConfig, has_model: bool) -> Self {
        Self {
            config,
            has_model,
            first: None,
            last: Duration::ZERO,
            frames: 0,
            moire: VecDeque::new(),
            edges: VecDeque::new(),
            model: VecDeque::new(),
            motion: VecDeque::new(),
            samples: VecDeque::new(),
        }
    }

    /// Frames observed so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// The motion measure between this frame and the kept frame closest to
    /// `lag-ms` earlier (between half and twice the lag), if any.
    pub(crate) fn compare_motion(
        &self,
        frame: &RgbImage,
        detection: &Detection,
        at: Duration,
    ) -> Option<motion::MotionMeasure> {
        let lag = Duration::from_millis(u64::from(self.config.lag_ms));
        let reference = self
            .samples
            .iter()
            .filter(|s| {
                let gap = at.saturating_sub(s.at);
                s.at < at && gap >= lag / 2 && gap <= lag * 2
            })
            .min_by_key(|s| at.saturating_sub(s.at).abs_diff(lag))?;
        motion::compare(reference, frame, detection, at)
    }

    pub(crate) fn push(&mut self, cues: &FrameCues, sample: MotionSample, at: Duration) {
        let history = self.config.history;
        let keep = |queue: &mut VecDeque<f32>, value: f32| {
            if queue.len() == history {
                queue.pop_front();
            }
            queue.push_back(value);
        };
        self.first.get_or_insert(at);
        self.last = self.last.max(at);
        self.frames += 1;
        keep(&mut self.moire, cues.moire.map_or(0.0, |m| m.score));
        keep(&mut self.edges, cues.frame.score);
        if let Some(p) = cues.model {
            keep(&mut self.model, p);
        }
        if let Some(m) = cues.motion.filter(motion::MotionMeasure::informative) {
            keep(&mut self.motion, m.evidence);
        }
        let horizon = Duration::from_millis(2 * u64::from(self.config.lag_ms));
        while self.samples.front().is_some_and(|s| at.saturating_sub(s.at) > horizon) {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The verdict from everything observed so far; see the module docs for
    /// the rule. Cheap; call it after every frame.
    pub fn result(&self) -> LivenessResult {
        let c = &self.config;
        let elapsed = self.first.map_or(Duration::ZERO, |first| self.last.saturating_sub(first));
        let elapsed_ms = u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX);
        let moire = median(&self.moire).unwrap_or(0.0);
        let edges = median(&self.edges).unwrap_or(0.0);
        let model = median(&self.model);
        let pairs = self.motion.len();
        let evidence = (pairs > 0).then(|| self.motion.iter().sum::<f32>() / pairs as f32);
        let texture = (1.0 - 0.5 * (moire / c.moire_spoof).max(edges / c.frame_spoof)).clamp(0.0, 1.0);
        let temporal = evidence
            .filter(|_| pairs >= c.min_motion_pairs)
            .map(|e| (0.5 + 0.5 * (e - c.planar_spoof) / (c.scene_live - c.planar_spoof)).clamp(0.0, 1.0));
        let score = [Some(texture), temporal, model].into_iter().flatten().fold(1.0f32, f32::min);
        let (verdict, reason) =
            self.rule(moire, edges, model, evidence.filter(|_| pairs >= c.min_motion_pairs), pairs, elapsed_ms);
        LivenessResult {
            verdict,
            score,
            temporal,
            texture,
            model,
            moire,
            edges,
            reason,
            frames: self.frames,
            elapsed_ms,
        }
    }

    fn rule(
        &self,
        moire: f32,
        edges: f32,
        model: Option<f32>,
        evidence: Option<f32>,
        pairs: usize,
        elapsed_ms: u32,
    ) -> (Verdict, Reason) {
        let c = &self.config;
        if self.frames < c.min_frames {
            return (Verdict::Unsure, Reason::Collecting { frames: self.frames, needed: c.min_frames });
        }
        if moire >= c.moire_spoof {
            return (Verdict::Spoof, Reason::ScreenPattern { score: moire, threshold: c.moire_spoof });
        }
        if edges >= c.frame_spoof {
            return (Verdict::Spoof, Reason::EnclosingEdges { support: edges, threshold: c.frame_spoof });
        }
        if let Some(p) = model.filter(|&p| p <= c.model_spoof) {
            return (Verdict::Spoof, Reason::ModelSpoof { probability: p });
        }
        if let Some(e) = evidence.filter(|&e| e <= c.planar_spoof) {
            return (Verdict::Spoof, Reason::PlanarMotion { evidence: e, pairs });
        }
        if self.has_model {
            match model {
                Some(p) if p >= c.model_live => {}
                _ => return (Verdict::Unsure, Reason::ModelUnsure { probability: model.unwrap_or(0.0) }),
            }
        }
        if let Some(e) = evidence.filter(|&e| e >= c.scene_live) {
            return (Verdict::Live, Reason::MovedAgainstScene { evidence: e, pairs });
        }
        if elapsed_ms >= c.still_live_after_ms {
            return (Verdict::Live, Reason::NoSpoofCue { elapsed_ms });
        }
        (Verdict::Unsure, Reason::Waiting { elapsed_ms, needed_ms: c.still_live_after_ms })
    }

    /// The single-frame verdict of a still image: texture and model only.
    pub(crate) fn still(config: LivenessConfig, cues: &FrameCues) -> LivenessResult {
        let still = LivenessConfig { min_frames: 1, still_live_after_ms: 0, ..config };
        let mut track = LivenessTrack::new(still, cues.model.is_some());
        track.first = Some(Duration::ZERO);
        track.frames = 1;
        track.moire.push_back(cues.moire.map_or(0.0, |m| m.score));
        track.edges.push_back(cues.frame.score);
        if let Some(p) = cues.model {
            track.model.push_back(p);
        }
        track.result()
    }
}

fn median(values: &VecDeque<f32>) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let mut sorted: Vec<f32> = values.iter().copied().collect();
    sorted.sort_by(f32::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) { 0.5 * (sorted[mid - 1] + sorted[mid]) } else { sorted[mid] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::{FrameMeasure, MoireMeasure, MotionMeasure};

    fn cues(moire: f32, edges: f32, motion: Option<f32>) -> FrameCues {
        FrameCues {
            moire: Some(MoireMeasure { side: 64, chroma_ratio: moire, score: moire }),
            frame: FrameMeasure { lines: [edges; 4], score: edges },
            model: None,
            motion: motion.map(|evidence| MotionMeasure {
                lag_ms: 200.0,
                face_points: 20,
                surround_points: 10,
                face_motion: 3.0,
                evidence,
            }),
        }
    }

    fn feed(track: &mut LivenessTrack, frames: usize, cue: FrameCues) {
        for i in 0..frames {
            let at = Duration::from_millis(40 * i as u64);
            let sample = MotionSample::empty(at);
            track.push(&cue, sample, at);
        }
    }

    #[test]
    fn a_clean_still_track_is_unsure_until_the_still_delay_then_live() {
        let config = LivenessConfig::default();
        let mut track = LivenessTrack::new(config, false);
        feed(&mut track, 3, cues(0.0, 0.1, None));
        assert_eq!(track.result().reason.code(), "collecting");
        feed(&mut track, 10, cues(0.0, 0.1, None));
        assert_eq!(track.result().verdict, Verdict::Unsure);
        let mut long = LivenessTrack::new(config, false);
        feed(&mut long, 30, cues(0.0, 0.1, None));
        let r = long.result();
        assert_eq!((r.verdict, r.reason.code()), (Verdict::Live, "no-spoof-cue"), "{r:?}");
        assert!(r.temporal.is_none() && r.texture > 0.9);
    }

    #[test]
    fn screen_pattern_and_edges_are_spoofs_whatever_the_motion_says() {
        let config = LivenessConfig::default();
        let mut screen = LivenessTrack::new(config, false);
        feed(&mut screen, 10, cues(3.0 * config.moire_spoof, 0.0, Some(0.5)));
        assert_eq!(screen.result().reason.code(), "screen-pattern");
        let mut paper = LivenessTrack::new(config, false);
        feed(&mut paper, 10, cues(0.0, 2.0 * config.frame_spoof, Some(0.5)));
        let r = paper.result();
        assert_eq!((r.verdict, r.reason.code()), (Verdict::Spoof, "enclosing-edges"));
        assert!(r.score < 0.5);
    }

    #[test]
    fn planar_motion_is_a_spoof_and_motion_against_the_scene_is_live_early() {
        let config = LivenessConfig::default();
        let mut photo = LivenessTrack::new(config, false);
        feed(&mut photo, 10, cues(0.0, 0.0, Some(config.planar_spoof - 0.1)));
        assert_eq!(photo.result().reason.code(), "planar-motion");
        let mut person = LivenessTrack::new(config, false);
        feed(&mut person, 10, cues(0.0, 0.0, Some(config.scene_live + 0.1)));
        let r = person.result();
        assert_eq!((r.verdict, r.reason.code()), (Verdict::Live, "moved-against-scene"));
        assert!(r.elapsed_ms < config.still_live_after_ms);
    }

    #[test]
    fn with_a_model_loaded_live_needs_the_model_to_agree() {
        let config = LivenessConfig::default();
        let mut track = LivenessTrack::new(config, true);
        let mut unsure = cues(0.0, 0.0, None);
        unsure.model = Some(0.4);
        feed(&mut track, 40, unsure);
        assert_eq!(track.result().reason.code(), "model-unsure");
        let mut spoof = unsure;
        spoof.model = Some(0.1);
        let mut other = LivenessTrack::new(config, true);
        feed(&mut other, 40, spoof);
        assert_eq!(other.result().reason.code(), "model-spoof");
    }

    #[test]
    fn a_still_image_is_judged_on_texture_alone() {
        let config = LivenessConfig::default();
        assert_eq!(LivenessTrack::still(config, &cues(0.0, 0.1, None)).verdict, Verdict::Live);
        assert_eq!(LivenessTrack::still(config, &cues(0.0, 1.0, None)).verdict, Verdict::Spoof);
    }
}
