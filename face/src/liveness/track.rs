//! One walk-up's accumulated cues and the verdict rule.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::FrameCues;
use super::config::LivenessConfig;
use super::deformation::{self, DeformationMeasure, FaceSample};
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
    /// Consecutive frames are (nearly) identical: a frozen camera or an
    /// injected still. A fault, never live.
    Frozen { fraction: f32, pairs: usize },
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
    /// The face moved, as one rigid plane, in `pairs` frame pairs and never
    /// showed life: a picture moved by hand, bordered or not.
    RigidFace { pairs: usize },
    /// Positive evidence: the face deformed (non-planar or non-rigid) in
    /// `pairs` frame pairs.
    FaceDeformed { pairs: usize, needed: usize },
    /// No positive evidence (yet): not live.
    NoLiveEvidence { elapsed_ms: u32, pairs: usize, needed: usize },
}

impl Reason {
    /// A short stable code for audit records and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Collecting { .. } => "collecting",
            Self::Frozen { .. } => "frozen",
            Self::ScreenPattern { .. } => "screen-pattern",
            Self::EnclosingEdges { .. } => "enclosing-edges",
            Self::PlanarMotion { .. } => "planar-motion",
            Self::ModelSpoof { .. } => "model-spoof",
            Self::ModelUnsure { .. } => "model-unsure",
            Self::RigidFace { .. } => "rigid-face",
            Self::FaceDeformed { .. } => "face-deformed",
            Self::NoLiveEvidence { .. } => "no-live-evidence",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Collecting { frames, needed } => write!(f, "{frames} of {needed} frames seen"),
            Self::Frozen { fraction, pairs } => write!(
                f,
                "frozen frames: {:.0} % of {pairs} consecutive frames identical (a frozen camera or an injected still)",
                fraction * 100.0
            ),
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
            Self::RigidFace { pairs } => {
                write!(f, "the face moved as one rigid plane in {pairs} frame pairs and never deformed")
            }
            Self::FaceDeformed { pairs, needed } => {
                write!(f, "the face deformed as no flat picture can in {pairs} frame pairs ({needed} needed)")
            }
            Self::NoLiveEvidence { elapsed_ms, pairs, needed } => write!(
                f,
                "no positive evidence of life in {elapsed_ms} ms ({pairs} of {needed} frame pairs showed a deforming face)"
            ),
        }
    }
}

/// A track's verdict with its scores. Scores are "live" scores in [0, 1]:
/// 0.5 is a cue's threshold, lower is more spoof-like.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LivenessResult {
    pub verdict: Verdict,
    /// The weakest of the cue scores below (`evidence` included: a track
    /// without positive evidence scores below 0.5).
    pub score: f32,
    /// Positive evidence: 0.5 · (pairs that showed a deforming face) /
    /// `live-pairs`, at most 1; live needs at least 0.5.
    pub evidence: f32,
    /// Face-versus-scene motion: `None` until `min-motion-pairs` informative
    /// frame pairs were seen; 0.5 at `planar-spoof`, 1 at no planar evidence.
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
    /// Frame pairs that showed a non-planar or non-rigid face.
    pub live_pairs: usize,
    /// Frame pairs in which the face moved as a rigid plane.
    pub rigid_pairs: usize,
    /// Fraction of consecutive frames whose faces were identical.
    pub frozen: f32,
    pub reason: Reason,
    /// Frames observed.
    pub frames: usize,
    /// Time from the first to the last frame observed.
    pub elapsed_ms: u32,
}

/// The state of one walk-up: recent cues and frames kept for comparisons.
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
    deformation: VecDeque<DeformationMeasure>,
    identical: VecDeque<bool>,
    samples: VecDeque<MotionSample>,
    faces: VecDeque<FaceSample>,
}

/// Picks the kept sample closest to `lag` before `at` (between half and twice the lag).
fn reference<T>(samples: &VecDeque<T>, at: Duration, lag: Duration, time: impl Fn(&T) -> Duration) -> Option<&T> {
    samples
        .iter()
        .filter(|s| {
            let gap = at.saturating_sub(time(s));
            time(s) < at && gap >= lag / 2 && gap <= lag * 2
        })
        .min_by_key(|s| at.saturating_sub(time(s)).abs_diff(lag))
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
            deformation: VecDeque::new(),
            identical: VecDeque::new(),
            samples: VecDeque::new(),
            faces: VecDeque::new(),
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
        let reference = reference(&self.samples, at, lag, |s| s.at)?;
        motion::compare(reference, frame, detection, at)
    }

    /// The deformation measure between this frame and the kept face closest
    /// to `lag-ms` earlier, if any.
    pub(crate) fn compare_deformation(
        &self,
        frame: &RgbImage,
        detection: &Detection,
        at: Duration,
    ) -> Option<DeformationMeasure> {
        let lag = Duration::from_millis(u64::from(self.config.lag_ms));
        let reference = reference(&self.faces, at, lag, |s| s.at)?;
        deformation::compare(reference, frame, detection, at)
    }

    /// How much this frame's face differs from the previous frame's (grey
    /// levels, the previous frame's geometry), if there was one.
    pub(crate) fn still_difference(&self, frame: &RgbImage) -> Option<f32> {
        self.faces.back().map(|previous| deformation::frozen_difference(previous, frame))
    }

    pub(crate) fn push(&mut self, cues: &FrameCues, sample: MotionSample, face: FaceSample, at: Duration) {
        let history = self.config.history;
        fn keep<T>(queue: &mut VecDeque<T>, value: T, history: usize) {
            if queue.len() == history {
                queue.pop_front();
            }
            queue.push_back(value);
        }
        self.first.get_or_insert(at);
        self.last = self.last.max(at);
        self.frames += 1;
        keep(&mut self.moire, cues.moire.map_or(0.0, |m| m.score), history);
        keep(&mut self.edges, cues.frame.score, history);
        if let Some(p) = cues.model {
            keep(&mut self.model, p, history);
        }
        if let Some(m) = cues.motion.filter(motion::MotionMeasure::informative) {
            keep(&mut self.motion, m.evidence, history);
        }
        if let Some(m) = cues.deformation {
            keep(&mut self.deformation, m, history);
        }
        if let Some(d) = cues.still_difference {
            keep(&mut self.identical, d < self.config.frozen_difference, history);
        }
        let horizon = Duration::from_millis(2 * u64::from(self.config.lag_ms));
        while self.samples.front().is_some_and(|s| at.saturating_sub(s.at) > horizon) {
            self.samples.pop_front();
        }
        while self.faces.front().is_some_and(|s| at.saturating_sub(s.at) > horizon) {
            self.faces.pop_front();
        }
        self.samples.push_back(sample);
        self.faces.push_back(face);
    }

    fn shows_life(&self, m: &DeformationMeasure) -> bool {
        shows_life(&self.config, m)
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
        let planar = (pairs >= c.min_motion_pairs).then(|| self.motion.iter().sum::<f32>() / pairs as f32);
        let texture = (1.0 - 0.5 * (moire / c.moire_spoof).max(edges / c.frame_spoof)).clamp(0.0, 1.0);
        let temporal = planar.map(|e| (0.5 + 0.5 * (e - c.planar_spoof) / -c.planar_spoof).clamp(0.0, 1.0));
        let live_pairs = self.deformation.iter().filter(|m| self.shows_life(m)).count();
        let rigid_pairs = self
            .deformation
            .iter()
            .filter(|m| m.motion >= c.min_face_motion && m.points >= 8 && !self.shows_life(m))
            .count();
        let evidence = (0.5 * live_pairs as f32 / c.live_pairs as f32).min(1.0);
        let identical = self.identical.iter().filter(|&&i| i).count();
        let frozen = if self.identical.is_empty() { 0.0 } else { identical as f32 / self.identical.len() as f32 };
        let score = [Some(texture), temporal, model, Some(evidence)].into_iter().flatten().fold(1.0f32, f32::min);
        let mut result = LivenessResult {
            verdict: Verdict::Unsure,
            score,
            evidence,
            temporal,
            texture,
            model,
            moire,
            edges,
            live_pairs,
            rigid_pairs,
            frozen,
            reason: Reason::Collecting { frames: self.frames, needed: c.min_frames },
            frames: self.frames,
            elapsed_ms,
        };
        (result.verdict, result.reason) = self.rule(&result, planar, pairs);
        if result.verdict == Verdict::Spoof {
            result.score = result.score.min(0.49);
        }
        result
    }

    fn rule(&self, r: &LivenessResult, planar: Option<f32>, pairs: usize) -> (Verdict, Reason) {
        let c = &self.config;
        if self.frames < c.min_frames {
            return (Verdict::Unsure, Reason::Collecting { frames: self.frames, needed: c.min_frames });
        }
        if self.identical.len() >= c.frozen_pairs && r.frozen >= c.frozen_fraction {
            return (Verdict::Spoof, Reason::Frozen { fraction: r.frozen, pairs: self.identical.len() });
        }
        if r.moire >= c.moire_spoof {
            return (Verdict::Spoof, Reason::ScreenPattern { score: r.moire, threshold: c.moire_spoof });
        }
        if r.edges >= c.frame_spoof {
            return (Verdict::Spoof, Reason::EnclosingEdges { support: r.edges, threshold: c.frame_spoof });
        }
        if let Some(p) = r.model.filter(|&p| p <= c.model_spoof) {
            return (Verdict::Spoof, Reason::ModelSpoof { probability: p });
        }
        if let Some(e) = planar.filter(|&e| e <= c.planar_spoof) {
            return (Verdict::Spoof, Reason::PlanarMotion { evidence: e, pairs });
        }
        if r.live_pairs >= c.live_pairs {
            if self.has_model {
                match r.model {
                    Some(p) if p >= c.model_live => {}
                    _ => return (Verdict::Unsure, Reason::ModelUnsure { probability: r.model.unwrap_or(0.0) }),
                }
            }
            return (Verdict::Live, Reason::FaceDeformed { pairs: r.live_pairs, needed: c.live_pairs });
        }
        if r.live_pairs == 0 && r.rigid_pairs >= c.rigid_pairs {
            return (Verdict::Spoof, Reason::RigidFace { pairs: r.rigid_pairs });
        }
        (
            Verdict::Unsure,
            Reason::NoLiveEvidence { elapsed_ms: r.elapsed_ms, pairs: r.live_pairs, needed: c.live_pairs },
        )
    }

    /// The single-frame verdict of a still image: texture and model only.
    /// One image shows no life: never live (spoof when a cue fires, unsure
    /// otherwise).
    pub(crate) fn still(config: LivenessConfig, cues: &FrameCues) -> LivenessResult {
        let still = LivenessConfig { min_frames: 1, ..config };
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

/// Whether one frame pair showed a face no flat or bent picture gives: off
/// the homography-plus-bend model (`residual-live`), a blink or a mouth in
/// the eye and mouth cells (`feature-live`), or, while the face held still,
/// a change in any few cells (`local-live`).
pub(crate) fn shows_life(config: &LivenessConfig, m: &DeformationMeasure) -> bool {
    m.bent_residual >= config.residual_live
        || m.bent_feature_local >= config.feature_live
        || (m.motion < config.still_motion && m.bent_local >= config.local_live)
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
            deformation: None,
            still_difference: Some(2.0),
        }
    }

    fn deformed(mut cue: FrameCues, motion: f32, residual: f32, local: f32) -> FrameCues {
        cue.deformation = Some(DeformationMeasure {
            lag_ms: 200.0,
            points: 30,
            motion,
            residual,
            local,
            change: 1.0,
            bent_residual: residual,
            bent_local: local,
            bent_feature_local: 0.0,
            ..Default::default()
        });
        cue
    }

    /// A pair whose eye and mouth cells changed by `feature`.
    fn in_the_eyes(mut cue: FrameCues, feature: f32) -> FrameCues {
        if let Some(m) = cue.deformation.as_mut() {
            m.bent_feature_local = feature;
        }
        cue
    }

    fn feed(track: &mut LivenessTrack, frames: usize, cue: FrameCues) {
        for i in 0..frames {
            let at = Duration::from_millis(40 * (track.frames() + i) as u64);
            track.push(&cue, MotionSample::placeholder(at), FaceSample::placeholder(at), at);
        }
    }

    #[test]
    fn a_clean_track_without_positive_evidence_is_never_live() {
        let config = LivenessConfig::default();
        let mut track = LivenessTrack::new(config, false);
        feed(&mut track, 3, cues(0.0, 0.1, None));
        assert_eq!(track.result().reason.code(), "collecting");
        feed(&mut track, 200, cues(0.0, 0.1, None));
        let r = track.result();
        assert_eq!((r.verdict, r.reason.code()), (Verdict::Unsure, "no-live-evidence"), "{r:?}");
        assert!(r.score < 0.5 && r.evidence == 0.0, "{r:?}");
    }

    #[test]
    fn identical_frames_are_frozen_whatever_else_is_seen() {
        let config = LivenessConfig::default();
        let mut track = LivenessTrack::new(config, false);
        let mut still = deformed(cues(0.0, 0.0, None), 0.0, 5.0, 10.0);
        still.still_difference = Some(0.0);
        feed(&mut track, 20, still);
        let r = track.result();
        assert_eq!((r.verdict, r.reason.code()), (Verdict::Spoof, "frozen"), "{r:?}");
        assert_eq!(r.frozen, 1.0);
    }

    #[test]
    fn a_deforming_face_is_live_and_a_rigid_one_is_a_spoof() {
        let config = LivenessConfig::default();
        let mut person = LivenessTrack::new(config, false);
        let small = 0.5 * config.local_live;
        feed(&mut person, 10, deformed(cues(0.0, 0.0, None), 2.0, 0.2, small));
        feed(&mut person, config.live_pairs, deformed(cues(0.0, 0.0, None), 2.0, 2.0 * config.residual_live, small));
        let r = person.result();
        assert_eq!((r.verdict, r.reason.code()), (Verdict::Live, "face-deformed"), "{r:?}");
        assert!(r.score >= 0.5);
        let mut blink = LivenessTrack::new(config, false);
        feed(&mut blink, 10, deformed(cues(0.0, 0.0, None), 0.0, 0.0, 2.0 * config.local_live));
        assert_eq!(blink.result().verdict, Verdict::Live);
        let mut photo = LivenessTrack::new(config, false);
        feed(&mut photo, config.rigid_pairs + 5, deformed(cues(0.0, 0.0, None), 3.0, 0.2, small));
        let r = photo.result();
        assert_eq!((r.verdict, r.reason.code()), (Verdict::Spoof, "rigid-face"), "{r:?}");
    }

    #[test]
    fn a_moving_face_counts_changes_in_the_eyes_and_mouth_only() {
        let config = LivenessConfig::default();
        let moving = 2.0 * config.still_motion.max(config.min_face_motion);
        // A bent photo turning: its edges change, its eyes do not.
        let mut bent = LivenessTrack::new(config, false);
        feed(&mut bent, config.rigid_pairs + 5, deformed(cues(0.0, 0.0, None), moving, 0.2, 2.0 * config.local_live));
        let r = bent.result();
        assert_eq!((r.verdict, r.reason.code(), r.live_pairs), (Verdict::Spoof, "rigid-face", 0), "{r:?}");
        // The same change held still, or a blink while moving, is life.
        let mut still = LivenessTrack::new(config, false);
        let held = 0.5 * config.still_motion;
        feed(&mut still, 10, deformed(cues(0.0, 0.0, None), held, 0.2, 2.0 * config.local_live));
        assert_eq!(still.result().verdict, Verdict::Live);
        let mut blink = LivenessTrack::new(config, false);
        let cue = in_the_eyes(
            deformed(cues(0.0, 0.0, None), moving, 0.2, 0.5 * config.local_live),
            2.0 * config.feature_live,
        );
        feed(&mut blink, 10, cue);
        assert_eq!(blink.result().verdict, Verdict::Live);
    }

    #[test]
    fn screen_pattern_and_edges_are_spoofs_whatever_the_face_does() {
        let config = LivenessConfig::default();
        let mut screen = LivenessTrack::new(config, false);
        feed(&mut screen, 10, deformed(cues(3.0 * config.moire_spoof, 0.0, Some(0.5)), 2.0, 5.0, 10.0));
        assert_eq!(screen.result().reason.code(), "screen-pattern");
        let mut paper = LivenessTrack::new(config, false);
        feed(&mut paper, 10, deformed(cues(0.0, 2.0 * config.frame_spoof, Some(0.5)), 2.0, 5.0, 10.0));
        let r = paper.result();
        assert_eq!((r.verdict, r.reason.code()), (Verdict::Spoof, "enclosing-edges"));
        assert!(r.score < 0.5);
    }

    #[test]
    fn planar_motion_with_the_surroundings_is_a_spoof() {
        let config = LivenessConfig::default();
        let mut photo = LivenessTrack::new(config, false);
        feed(&mut photo, 10, cues(0.0, 0.0, Some(config.planar_spoof - 0.1)));
        assert_eq!(photo.result().reason.code(), "planar-motion");
    }

    #[test]
    fn with_a_model_loaded_live_needs_the_model_to_agree() {
        let config = LivenessConfig::default();
        let mut track = LivenessTrack::new(config, true);
        let mut unsure = deformed(cues(0.0, 0.0, None), 2.0, 2.0 * config.residual_live, 10.0);
        unsure.model = Some(0.4);
        feed(&mut track, 40, unsure);
        assert_eq!(track.result().reason.code(), "model-unsure");
        let mut spoof = unsure;
        spoof.model = Some(0.1);
        let mut other = LivenessTrack::new(config, true);
        feed(&mut other, 40, spoof);
        assert_eq!(other.result().reason.code(), "model-spoof");
        let mut agree = unsure;
        agree.model = Some(0.9);
        let mut third = LivenessTrack::new(config, true);
        feed(&mut third, 40, agree);
        assert_eq!(third.result().verdict, Verdict::Live);
    }

    #[test]
    fn a_still_image_is_never_live() {
        let config = LivenessConfig::default();
        let clean = LivenessTrack::still(config, &cues(0.0, 0.1, None));
        assert_eq!((clean.verdict, clean.reason.code()), (Verdict::Unsure, "no-live-evidence"));
        assert_eq!(LivenessTrack::still(config, &cues(0.0, 1.0, None)).verdict, Verdict::Spoof);
    }
}
