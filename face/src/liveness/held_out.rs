//! Presentation-attack detection measured on a held-out half: the generated
//! attack corpus ([`super::corpus`]), the recorded attack clips and the live
//! clips, with identities split into a tuning and a reporting half.
//!
//! Every presentation becomes a [`Trace`]: the cues of each frame of one
//! kiosk attempt (from the first frame with a face until the decision window
//! has passed, or the face is lost). A trace is judged as the kiosk judges an
//! attempt ([`judge`]): the first conclusive verdict, or `unsure` (refused)
//! when the window closes. Thresholds are chosen on the tuning half's traces
//! ([`tune`]); APCER per species and BPCER are reported on the reporting
//! half's ([`summarise`]), with 95 % Wilson intervals.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::corpus::{self, AttackClip, Half, SourcePhoto, Species, wilson};
use super::dataset::{DataSet, Sample};
use super::eval::{EvalOptions, FrameReadError, FrameReader, LivenessEvalError};
use super::{FrameCues, LivenessChecker, LivenessConfig, LivenessResult, Verdict, deformation, motion};
use crate::detect::Detection;
use crate::error::InferenceError;
use crate::pipeline::{FacePipeline, primary_face};

/// What a trace presents.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Presentation {
    /// An attack of a species (a generated one, or `print-clip` / `replay-clip`).
    Attack(String),
    BonaFide,
}

/// One frame of a trace: its time since the attempt began and its cues.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub at_ms: u32,
    pub cues: FrameCues,
}

/// The cues of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub presentation: Presentation,
    pub identity: String,
    /// The clip file, or the species and identity of a generated clip.
    pub source: String,
    /// Frames of the attempt with a face, with their cues.
    pub steps: Vec<Step>,
    /// Whether the attempt lasted its whole window (else the face was lost
    /// or the clip ended first: counted, not rated).
    pub complete: bool,
}

/// Time spent on the cues per frame, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub frames: usize,
    /// Everything `observe` does (all cues).
    pub total_ms: f64,
    /// The part this evaluation's positive-evidence and frozen cues add.
    pub added_ms: f64,
}

impl Latency {
    pub fn mean_total_ms(&self) -> f64 {
        if self.frames == 0 { 0.0 } else { self.total_ms / self.frames as f64 }
    }

    pub fn mean_added_ms(&self) -> f64 {
        if self.frames == 0 { 0.0 } else { self.added_ms / self.frames as f64 }
    }
}

/// Called with each frame (time, pixels); returns whether to go on.
type Visit<'v> = dyn FnMut(Duration, &RgbImage) -> Result<bool, InferenceError> + 'v;
/// Feeds every frame of one clip to a [`Visit`].
type Frames<'f> = dyn FnMut(&mut Visit<'_>) -> Result<(), FrameReadError> + 'f;
/// One attempt's steps and whether it lasted its window.
type Attempt = (Vec<Step>, bool);

/// What [`record`] runs on.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    pub pipeline: &'a FacePipeline,
    pub checker: &'a LivenessChecker,
    pub options: EvalOptions,
}

/// Builds traces, one attempt at a time, timing the cues.
struct Recorder<'a> {
    pipeline: &'a FacePipeline,
    checker: &'a LivenessChecker,
    options: EvalOptions,
    latency: Latency,
}

struct Open {
    track: super::LivenessTrack,
    started: Duration,
    last_seen: Duration,
    last_box: crate::geometry::BoundingBox,
    steps: Vec<Step>,
}

impl Recorder<'_> {
    fn primary(&self, image: &RgbImage) -> Result<Option<Detection>, InferenceError> {
        let faces = self.pipeline.detect(image)?;
        Ok(primary_face(&faces, image.width(), image.height()).and_then(|i| faces.get(i).copied()))
    }

    /// `LivenessChecker::observe`, with the new cues timed apart.
    fn observe(
        &mut self,
        track: &mut super::LivenessTrack,
        frame: &RgbImage,
        face: &Detection,
        at: Duration,
    ) -> Result<Option<FrameCues>, InferenceError> {
        if !super::measurable(frame, face) {
            return Ok(None);
        }
        let started = Instant::now();
        let mut cues = self.checker.frame_cues(frame, face)?;
        cues.motion = track.compare_motion(frame, face, at);
        let sample = motion::sample_frame(frame, face, at);
        let added = Instant::now();
        cues.deformation = track.compare_deformation(frame, face, at);
        cues.still_difference = track.still_difference(frame);
        let face_sample = deformation::sample_frame(frame, face, at);
        let added = added.elapsed();
        track.push(&cues, sample, face_sample, at);
        self.latency.frames += 1;
        self.latency.total_ms += started.elapsed().as_secs_f64() * 1e3;
        self.latency.added_ms += added.as_secs_f64() * 1e3;
        Ok(Some(cues))
    }

    /// Cuts `frames` into attempts of one window each; `first_only` stops
    /// after the first.
    fn attempts(&mut self, frames: &mut Frames<'_>, first_only: bool) -> Result<(Vec<Attempt>, bool), FrameReadError> {
        let mut done: Vec<Attempt> = Vec::new();
        let mut open: Option<Open> = None;
        let mut any_face = false;
        let options = self.options;
        let mut visit = |at: Duration, image: &RgbImage| -> Result<bool, InferenceError> {
            if first_only && !done.is_empty() {
                return Ok(false);
            }
            let face = self.primary(image)?;
            any_face |= face.is_some();
            if let Some(o) = &open {
                let lost = at.saturating_sub(o.last_seen) > options.max_gap;
                let jumped = face.is_some_and(|f| f.bbox.iou(&o.last_box) < options.min_iou);
                if (lost || jumped)
                    && let Some(o) = open.take()
                {
                    done.push((o.steps, false));
                }
            }
            let Some(face) = face else { return Ok(true) };
            let o = open.get_or_insert_with(|| Open {
                track: self.checker.track(),
                started: at,
                last_seen: at,
                last_box: face.bbox,
                steps: Vec::new(),
            });
            let since = at.saturating_sub(o.started);
            if let Some(cues) = self.observe(&mut o.track, image, &face, at)? {
                o.steps.push(Step { at_ms: u32::try_from(since.as_millis()).unwrap_or(u32::MAX), cues });
            }
            o.last_seen = at;
            o.last_box = face.bbox;
            // A spoof from a cue no tuned threshold acts on (frozen, texture,
            // planar surroundings, the model) ends the attempt as the kiosk
            // would, whatever the thresholds: the rest of the window is moot.
            let result = o.track.result();
            let settled = result.verdict == Verdict::Spoof && result.reason.code() != "rigid-face";
            if (since >= options.window || settled)
                && let Some(o) = open.take()
            {
                done.push((o.steps, true));
            }
            Ok(true)
        };
        frames(&mut visit)?;
        if let Some(o) = open.take() {
            done.push((o.steps, false));
        }
        Ok((done, any_face))
    }
}

/// Everything measured on one half.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Traces {
    pub half: Half,
    /// Identities of the generated attacks.
    pub identities: Vec<String>,
    pub traces: Vec<Trace>,
    /// Presentations in which no face was ever found, per species.
    pub no_face: BTreeMap<String, usize>,
    pub latency: Latency,
}

/// One dev photo per identity of `half` (the first in `faces/manifest.csv`
/// order, at least 64 px on its shorter side, whose face the detector finds
/// at least 24 px wide), at most `limit`, in hash order.
pub fn photos(
    pipeline: &FacePipeline,
    data: &DataSet,
    half: Half,
    limit: usize,
) -> Result<Vec<SourcePhoto>, LivenessEvalError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut candidates: Vec<&Sample> = data
        .stills
        .iter()
        .filter(|s| s.attack.is_none() && !s.identity.is_empty() && corpus::half(&s.identity) == half)
        .filter(|s| seen.insert(s.identity.clone()))
        .collect();
    candidates.sort_by_key(|s| (corpus::fnv1a(&s.identity), s.identity.clone()));
    let mut photos = Vec::new();
    let mut tried = std::collections::BTreeSet::new();
    for first in candidates {
        if photos.len() >= limit {
            break;
        }
        // The identity's photos in manifest order; the first usable one.
        for sample in data.stills.iter().filter(|s| s.attack.is_none() && s.identity == first.identity) {
            if !tried.insert(sample.path.clone()) {
                continue;
            }
            let read_error =
                |message: String| LivenessEvalError::Read { path: sample.path.display().to_string(), message };
            let bytes = std::fs::read(&sample.path).map_err(|e| read_error(e.to_string()))?;
            let image = crate::decode_image(&bytes).map_err(|e| read_error(e.to_string()))?;
            if image.width().min(image.height()) < 64 {
                continue;
            }
            let faces = pipeline.detect(&image)?;
            let Some(face) = primary_face(&faces, image.width(), image.height()).and_then(|i| faces.get(i)) else {
                continue;
            };
            if face.bbox.width < 24.0 {
                continue;
            }
            photos.push(SourcePhoto { identity: sample.identity.clone(), image, face: face.bbox });
            break;
        }
    }
    Ok(photos)
}

/// Records the traces of one half: every species for every photo (one
/// attempt each), the attack clips and the live clips of the half's
/// identities (every attempt).
pub fn record(
    setup: Setup<'_>,
    half: Half,
    photos: &[SourcePhoto],
    data: &DataSet,
    reader: &mut dyn FrameReader,
    progress: &mut dyn FnMut(&str),
) -> Result<Traces, LivenessEvalError> {
    let Setup { pipeline, checker, options } = setup;
    let mut recorder = Recorder { pipeline, checker, options, latency: Latency::default() };
    let mut traces = Vec::new();
    let mut no_face: BTreeMap<String, usize> = BTreeMap::new();
    for photo in photos {
        for species in Species::ALL {
            let clip = AttackClip::new(species, photo);
            let mut frames = |visit: &mut Visit<'_>| -> Result<(), FrameReadError> {
                for index in 0..clip.frames() {
                    let at = Duration::from_secs_f64(AttackClip::time(index));
                    if !visit(at, &clip.render(index))? {
                        break;
                    }
                }
                Ok(())
            };
            let (attempts, any_face) =
                recorder.attempts(&mut frames, true).map_err(|e| read_error(&name_of(species, photo), e))?;
            let name = species.as_str().to_owned();
            if !any_face {
                *no_face.entry(name.clone()).or_default() += 1;
            }
            for (steps, complete) in attempts {
                traces.push(Trace {
                    presentation: Presentation::Attack(name.clone()),
                    identity: photo.identity.clone(),
                    source: format!("{name}/{}", photo.identity),
                    steps,
                    complete,
                });
            }
            progress(&format!("{name} {}", photo.identity));
        }
    }
    for sample in data.videos.iter().filter(|s| corpus::half(&s.identity) == half) {
        let presentation = match &sample.attack {
            Some(attack) => Presentation::Attack(format!("{attack}-clip")),
            None => Presentation::BonaFide,
        };
        let mut frames = |visit: &mut Visit<'_>| -> Result<(), FrameReadError> {
            let mut go = true;
            reader.read(&sample.path, &mut |at, image| {
                if go {
                    go = visit(at, image)?;
                }
                Ok(())
            })
        };
        let (attempts, any_face) =
            recorder.attempts(&mut frames, false).map_err(|e| read_error(&sample.path.display().to_string(), e))?;
        let name = match &presentation {
            Presentation::Attack(a) => a.clone(),
            Presentation::BonaFide => "bona-fide".to_owned(),
        };
        if !any_face {
            *no_face.entry(name).or_default() += 1;
        }
        for (steps, complete) in attempts {
            traces.push(Trace {
                presentation: presentation.clone(),
                identity: sample.identity.clone(),
                source: sample.path.display().to_string(),
                steps,
                complete,
            });
        }
        progress(&sample.path.display().to_string());
    }
    let identities = photos.iter().map(|p| p.identity.clone()).collect();
    Ok(Traces { half, identities, traces, no_face, latency: recorder.latency })
}

fn name_of(species: Species, photo: &SourcePhoto) -> String {
    format!("{}/{}", species.as_str(), photo.identity)
}

fn read_error(path: &str, error: FrameReadError) -> LivenessEvalError {
    match error {
        FrameReadError::Inference(e) => LivenessEvalError::Inference(e),
        FrameReadError::Source(message) => LivenessEvalError::Read { path: path.to_owned(), message },
    }
}

/// The kiosk's verdict on a trace at `config`: the first conclusive verdict,
/// else the last (unsure). `None` for a trace without frames.
pub fn judge(config: LivenessConfig, trace: &Trace) -> Option<LivenessResult> {
    let mut track = super::LivenessTrack::new(config, false);
    let mut last = None;
    for step in &trace.steps {
        let at = Duration::from_millis(u64::from(step.at_ms));
        track.push(&step.cues, motion::MotionSample::placeholder(at), deformation::FaceSample::placeholder(at), at);
        let result = track.result();
        if result.verdict != Verdict::Unsure {
            return Some(result);
        }
        last = Some(result);
    }
    last
}

/// One row of the per-species table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The species, or `bona-fide`.
    pub name: String,
    /// Rated presentations (complete attempts, or attempts that concluded).
    pub presentations: usize,
    /// Attacks judged live (APCER numerator), or live presentations refused
    /// (BPCER numerator).
    pub errors: usize,
    pub rate: f64,
    /// 95 % Wilson interval of the rate.
    pub interval: (f64, f64),
    /// Incomplete attempts, not rated, and presentations with no face found.
    pub incomplete: usize,
    pub no_face: usize,
    /// How many presentations each cue decided (reason codes).
    pub decided_by: BTreeMap<String, usize>,
}

/// The table of one half at one configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub half: Half,
    pub config: LivenessConfig,
    pub identities: usize,
    /// One row per attack species (generated, then clips).
    pub attacks: Vec<Row>,
    /// The live clips' attempts (BPCER).
    pub bona_fide: Row,
    pub latency: Latency,
}

/// APCER per species and BPCER of `traces` at `config`.
pub fn summarise(config: LivenessConfig, traces: &Traces) -> Table {
    let mut rows: BTreeMap<Presentation, Row> = BTreeMap::new();
    let row = |name: &str| Row {
        name: name.to_owned(),
        presentations: 0,
        errors: 0,
        rate: 0.0,
        interval: (0.0, 1.0),
        incomplete: 0,
        no_face: 0,
        decided_by: BTreeMap::new(),
    };
    for species in Species::ALL {
        rows.insert(Presentation::Attack(species.as_str().to_owned()), row(species.as_str()));
    }
    rows.insert(Presentation::BonaFide, row("bona-fide"));
    for trace in &traces.traces {
        let name = match &trace.presentation {
            Presentation::Attack(a) => a.clone(),
            Presentation::BonaFide => "bona-fide".to_owned(),
        };
        let entry = rows.entry(trace.presentation.clone()).or_insert_with(|| row(&name));
        let Some(result) = judge(config, trace) else { continue };
        if result.verdict == Verdict::Unsure && !trace.complete {
            entry.incomplete += 1;
            continue;
        }
        entry.presentations += 1;
        *entry.decided_by.entry(result.reason.code().to_owned()).or_default() += 1;
        let error = match trace.presentation {
            Presentation::Attack(_) => result.verdict == Verdict::Live,
            Presentation::BonaFide => result.verdict != Verdict::Live,
        };
        entry.errors += usize::from(error);
    }
    for (presentation, entry) in rows.iter_mut() {
        let name = match presentation {
            Presentation::Attack(a) => a.as_str(),
            Presentation::BonaFide => "bona-fide",
        };
        entry.no_face = traces.no_face.get(name).copied().unwrap_or(0);
        entry.rate = if entry.presentations == 0 { 0.0 } else { entry.errors as f64 / entry.presentations as f64 };
        entry.interval = wilson(entry.errors, entry.presentations);
    }
    let bona_fide = rows.remove(&Presentation::BonaFide).unwrap_or_else(|| row("bona-fide"));
    Table {
        half: traces.half,
        config,
        identities: traces.identities.len(),
        attacks: rows.into_values().collect(),
        bona_fide,
        latency: traces.latency,
    }
}

/// The thresholds chosen on a half, and how they scored there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tuning {
    pub config: LivenessConfig,
    pub table: Table,
    pub candidates: usize,
}

/// A trace reduced to what the tuned thresholds act on: per frame, whether
/// the cues the tuning leaves alone conclude (a spoof code), and the
/// deformation measure.
struct Reduced<'a> {
    trace: &'a Trace,
    steps: Vec<(Option<Option<&'static str>>, Option<deformation::DeformationMeasure>)>,
}

fn reduce(base: LivenessConfig, trace: &Trace) -> Reduced<'_> {
    let others = LivenessConfig { live_pairs: usize::MAX, rigid_pairs: usize::MAX, ..base };
    let mut track = super::LivenessTrack::new(others, false);
    let mut steps = Vec::with_capacity(trace.steps.len());
    for step in &trace.steps {
        let at = Duration::from_millis(u64::from(step.at_ms));
        track.push(&step.cues, motion::MotionSample::placeholder(at), deformation::FaceSample::placeholder(at), at);
        let result = track.result();
        // None: still collecting; Some(None): no other cue concluded; Some(Some(code)): a spoof.
        let other = match (result.verdict, result.reason.code()) {
            (_, "collecting") => None,
            (Verdict::Spoof, code) => Some(Some(code)),
            _ => Some(None),
        };
        steps.push((other, step.cues.deformation));
    }
    Reduced { trace, steps }
}

/// The verdict of a reduced trace at `config` (same rule as [`judge`], for
/// thresholds on the deformation cue only): (live, decided by).
fn fast_judge(config: &LivenessConfig, reduced: &Reduced<'_>) -> (Verdict, &'static str) {
    let (mut live, mut rigid) = (0usize, 0usize);
    let mut outcome = (Verdict::Unsure, "no-live-evidence");
    for (other, deformation) in &reduced.steps {
        if let Some(m) = deformation {
            if super::track::shows_life(config, m) {
                live += 1;
            } else if m.motion >= config.min_face_motion && m.points >= 8 {
                rigid += 1;
            }
        }
        match other {
            None => outcome = (Verdict::Unsure, "collecting"),
            Some(Some(code)) => return (Verdict::Spoof, code),
            Some(None) if live >= config.live_pairs => return (Verdict::Live, "face-deformed"),
            Some(None) if live == 0 && rigid >= config.rigid_pairs => return (Verdict::Spoof, "rigid-face"),
            Some(None) => outcome = (Verdict::Unsure, "no-live-evidence"),
        }
    }
    outcome
}

/// Chooses the positive-evidence thresholds (`residual-live`, `local-live`,
/// `feature-live`, `still-motion`, `live-pairs`) on `traces` (the tuning
/// half): among the settings that accept no attack of any species as live
/// (the cylinder included), the one with the fewest refused live attempts,
/// then the strictest (highest thresholds, most pairs, lowest
/// `still-motion`); when every setting accepts some attack, the fewest
/// accepted attacks first.
pub fn tune(base: LivenessConfig, traces: &Traces) -> Tuning {
    let mut reduced: Vec<Reduced<'_>> = traces.traces.iter().map(|t| reduce(base, t)).collect();
    // Attacks first, so that a setting accepting one is dropped early.
    reduced.sort_by_key(|r| matches!(r.trace.presentation, Presentation::BonaFide));
    let tenths = |from: i32, to: i32| (from..=to).map(|t| t as f32 * 0.1);
    let mut best: Option<((usize, usize, i64), LivenessConfig)> = None;
    let mut candidates = 0;
    for live_pairs in 1..=4usize {
        for still_motion in [0.25f32, 0.5, 0.75, 1.0, 1.5, 2.0] {
            for residual in [2.0f32, 2.5, 3.0, 4.0, 6.0, 8.0] {
                for feature in tenths(15, 40) {
                    for local in tenths(12, 40) {
                        candidates += 1;
                        let config = LivenessConfig {
                            residual_live: residual,
                            local_live: local,
                            feature_live: feature,
                            still_motion,
                            live_pairs,
                            ..base
                        };
                        let margin = -((residual * 10.0).round() as i64
                            + (local * 10.0).round() as i64
                            + (feature * 10.0).round() as i64
                            + live_pairs as i64
                            - (still_motion * 10.0).round() as i64);
                        let (mut refused, mut accepted) = (0usize, 0usize);
                        for r in &reduced {
                            if best.as_ref().is_some_and(|((a, f, _), _)| (accepted, refused) > (*a, *f)) {
                                break;
                            }
                            let (verdict, _) = fast_judge(&config, r);
                            let rated = verdict != Verdict::Unsure || r.trace.complete;
                            if !rated || r.steps.is_empty() {
                                continue;
                            }
                            match &r.trace.presentation {
                                Presentation::BonaFide => refused += usize::from(verdict != Verdict::Live),
                                Presentation::Attack(_) => accepted += usize::from(verdict == Verdict::Live),
                            }
                        }
                        let key = (accepted, refused, margin);
                        if best.as_ref().is_none_or(|(k, _)| key < *k) {
                            best = Some((key, config));
                        }
                    }
                }
            }
        }
    }
    let config = best.map_or(base, |(_, c)| c);
    Tuning { table: summarise(config, traces), config, candidates }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::{DeformationMeasure, FrameMeasure};

    /// `frames` steps 40 ms apart whose deformation pairs are `measure`.
    fn trace(presentation: Presentation, measure: DeformationMeasure) -> Trace {
        let cues = FrameCues {
            moire: None,
            frame: FrameMeasure::default(),
            model: None,
            motion: None,
            deformation: Some(measure),
            still_difference: Some(2.0),
        };
        let steps = (0..76).map(|i| Step { at_ms: 40 * i, cues }).collect();
        Trace { presentation, identity: "Some_One".into(), source: "test".into(), steps, complete: true }
    }

    #[test]
    fn tuning_keeps_a_turning_bent_photo_out_and_a_still_blinking_face_in() {
        // A turning cylinder: moves, changes cells away from its eyes. A
        // live face: holds still, a few cells change.
        let cylinder = DeformationMeasure {
            points: 40,
            motion: 3.0,
            bent_residual: 1.0,
            bent_local: 3.0,
            bent_feature_local: 0.8,
            ..DeformationMeasure::default()
        };
        let person = DeformationMeasure {
            points: 40,
            motion: 0.2,
            bent_residual: 0.3,
            bent_local: 2.5,
            bent_feature_local: 1.0,
            ..DeformationMeasure::default()
        };
        let traces = Traces {
            half: Half::Tuning,
            identities: vec!["Some_One".into()],
            traces: vec![
                trace(Presentation::Attack(Species::Cylinder.as_str().into()), cylinder),
                trace(Presentation::BonaFide, person),
            ],
            no_face: BTreeMap::new(),
            latency: Latency::default(),
        };
        let tuning = tune(LivenessConfig::default(), &traces);
        let c = tuning.config;
        assert!(c.still_motion < cylinder.motion && c.local_live <= person.bent_local, "{c:?}");
        assert!(c.feature_live > cylinder.bent_feature_local && c.residual_live > cylinder.bent_residual, "{c:?}");
        assert_eq!(judge(c, &traces.traces[0]).map(|r| r.verdict), Some(Verdict::Spoof));
        assert_eq!(judge(c, &traces.traces[1]).map(|r| r.verdict), Some(Verdict::Live));
        let cylinders = tuning.table.attacks.iter().find(|r| r.name == "cylinder").map(|r| (r.presentations, r.errors));
        assert_eq!(cylinders, Some((1, 0)));
        assert_eq!((tuning.table.bona_fide.presentations, tuning.table.bona_fide.errors), (1, 0));
    }
}
