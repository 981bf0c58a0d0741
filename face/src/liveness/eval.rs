//! Measuring presentation-attack detection on labelled stills and clips:
//! APCER per attack type and BPCER (ISO/IEC 30107-3 terms), at one
//! configuration.
//!
//! * A **still** is one presentation, judged by
//!   [`LivenessChecker::assess_still`] on its primary face.
//! * A **clip** is cut into kiosk attempts ([`Attempts`]): an attempt starts on
//!   a frame with a face and ends when its track is conclusive (live or spoof)
//!   or when the decision window has passed — then the next frame with a face
//!   starts the next attempt (no cooldown, so a long clip gives many
//!   presentations). An attempt whose face is lost for longer than
//!   [`EvalOptions::max_gap`], or that jumps elsewhere, or that the end of the
//!   clip cuts short while still unsure, is *incomplete*: counted, not rated.
//!
//! APCER of an attack type = attack presentations judged live / attack
//! presentations. BPCER = bona fide presentations not judged live (spoof, or
//! still unsure when the window closed: the kiosk refuses both) / bona fide
//! presentations. Files in which no face was found are counted apart.
//!
//! A still image is never live (one image holds no positive evidence), so on
//! stills only the single-frame cues are measured: an `unsure` still counts
//! as passed — APCER on stills is the attacks no texture cue caught, BPCER
//! the live photos a texture cue refused.
//!
//! Decoding clips is the caller's business ([`FrameReader`]): the daemon
//! brings its frame sources; [`DirectoryFrames`] reads a directory of images.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use image::RgbImage;
use serde::Serialize;

use super::dataset::{DataSet, Medium, Sample};
use super::{LivenessChecker, LivenessConfig, LivenessResult, LivenessTrack, Verdict};
use crate::detect::Detection;
use crate::error::InferenceError;
use crate::geometry::BoundingBox;
use crate::pipeline::{FacePipeline, primary_face};

/// How clips are cut into attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalOptions {
    /// The decision window: an attempt not conclusive this long after its
    /// first frame is decided on what it has (the daemon's `decision.window-ms`).
    pub window: Duration,
    /// A face unseen for longer than this ends the attempt.
    pub max_gap: Duration,
    /// Consecutive faces of one attempt overlap at least this much (IoU).
    pub min_iou: f32,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self { window: Duration::from_millis(3000), max_gap: Duration::from_millis(500), min_iou: 0.3 }
    }
}

/// Why the evaluation stopped.
#[derive(Debug, thiserror::Error)]
pub enum LivenessEvalError {
    #[error(transparent)]
    DataSet(#[from] super::dataset::DataSetError),
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// Decodes clips: calls `visit` with each frame's media time and pixels, in
/// order. Unreadable single frames may be skipped; an unreadable clip is an
/// error (a message naming the cause).
pub trait FrameReader {
    fn read(
        &mut self,
        path: &Path,
        visit: &mut dyn FnMut(Duration, &RgbImage) -> Result<(), InferenceError>,
    ) -> Result<(), FrameReadError>;
}

/// A clip could not be read, or visiting a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameReadError {
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// Clips stored as directories of image files (JPEG, PNG, …), in name order,
/// at a fixed frame rate.
#[derive(Debug, Clone, Copy)]
pub struct DirectoryFrames {
    pub fps: f64,
}

impl FrameReader for DirectoryFrames {
    fn read(
        &mut self,
        path: &Path,
        visit: &mut dyn FnMut(Duration, &RgbImage) -> Result<(), InferenceError>,
    ) -> Result<(), FrameReadError> {
        let failed = |e: &dyn std::fmt::Display| FrameReadError::Source(format!("{}: {e}", path.display()));
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(failed(&"the frame rate must be positive"));
        }
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| failed(&e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for (index, file) in files.iter().enumerate() {
            let bytes = std::fs::read(file).map_err(|e| failed(&e))?;
            let image = crate::decode_image(&bytes).map_err(|e| failed(&e))?;
            visit(Duration::from_secs_f64(index as f64 / self.fps), &image)?;
        }
        Ok(())
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptEnd {
    /// The track became live or spoof.
    Concluded,
    /// The decision window passed.
    Window,
    /// The face was lost or jumped, or the clip ended, while still unsure.
    Incomplete,
}

/// One attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AttemptOutcome {
    pub started_ms: u32,
    pub end: AttemptEnd,
    pub result: LivenessResult,
}

struct OpenAttempt {
    track: LivenessTrack,
    started: Duration,
    last_seen: Duration,
    last_box: BoundingBox,
}

/// Cuts one clip into kiosk attempts (see the module docs).
pub struct Attempts<'a> {
    checker: &'a LivenessChecker,
    options: EvalOptions,
    open: Option<OpenAttempt>,
    outcomes: Vec<AttemptOutcome>,
}

impl std::fmt::Debug for Attempts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempts").field("open", &self.open.is_some()).field("outcomes", &self.outcomes).finish()
    }
}

impl<'a> Attempts<'a> {
    pub fn new(checker: &'a LivenessChecker, options: EvalOptions) -> Self {
        Self { checker, options, open: None, outcomes: Vec::new() }
    }

    /// One frame at media time `at` with its primary face, if any.
    pub fn frame(&mut self, image: &RgbImage, face: Option<&Detection>, at: Duration) -> Result<(), InferenceError> {
        if let Some(open) = &self.open {
            let lost = at.saturating_sub(open.last_seen) > self.options.max_gap;
            let jumped = face.is_some_and(|f| f.bbox.iou(&open.last_box) < self.options.min_iou);
            if lost || jumped {
                self.close(AttemptEnd::Incomplete);
            }
        }
        let Some(face) = face else { return Ok(()) };
        let open = self.open.get_or_insert_with(|| OpenAttempt {
            track: self.checker.track(),
            started: at,
            last_seen: at,
            last_box: face.bbox,
        });
        self.checker.observe(&mut open.track, image, face, at)?;
        open.last_seen = at;
        open.last_box = face.bbox;
        let verdict = open.track.result().verdict;
        if verdict != Verdict::Unsure {
            self.close(AttemptEnd::Concluded);
        } else if at.saturating_sub(open.started) >= self.options.window {
            self.close(AttemptEnd::Window);
        }
        Ok(())
    }

    fn close(&mut self, end: AttemptEnd) {
        if let Some(open) = self.open.take() {
            let started_ms = u32::try_from(open.started.as_millis()).unwrap_or(u32::MAX);
            self.outcomes.push(AttemptOutcome { started_ms, end, result: open.track.result() });
        }
    }

    /// Ends the clip; every attempt's outcome, in order.
    pub fn finish(mut self) -> Vec<AttemptOutcome> {
        self.close(AttemptEnd::Incomplete);
        self.outcomes
    }
}

/// Tally of verdicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub presentations: usize,
    pub live: usize,
    pub spoof: usize,
    pub unsure: usize,
}

impl Counts {
    fn add(&mut self, verdict: Verdict) {
        self.presentations += 1;
        match verdict {
            Verdict::Live => self.live += 1,
            Verdict::Spoof => self.spoof += 1,
            Verdict::Unsure => self.unsure += 1,
        }
    }

    /// Fraction judged live (APCER for attacks).
    pub fn live_rate(&self) -> f64 {
        if self.presentations == 0 { 0.0 } else { self.live as f64 / self.presentations as f64 }
    }

    /// Fraction not judged live (BPCER for bona fide presentations).
    pub fn refused_rate(&self) -> f64 {
        if self.presentations == 0 { 0.0 } else { 1.0 - self.live_rate() }
    }
}

/// APCER of one attack type on one medium.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackFigures {
    pub medium: Medium,
    pub attack: String,
    /// Files of this type, and those of them in which no face was found.
    pub files: usize,
    pub no_face: usize,
    pub incomplete: usize,
    pub counts: Counts,
    pub apcer: f64,
    /// Spans of the moiré and edge cues over the rated attempts.
    pub moire: Option<Span>,
    pub edges: Option<Span>,
}

/// BPCER on one medium.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BonaFideFigures {
    pub medium: Medium,
    pub files: usize,
    pub no_face: usize,
    pub incomplete: usize,
    pub counts: Counts,
    pub bpcer: f64,
    /// Spans of the moiré and edge cues over the rated attempts.
    pub moire: Option<Span>,
    pub edges: Option<Span>,
}

/// One file's presentations, for the detailed report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileOutcome {
    pub path: String,
    pub medium: Medium,
    pub attack: Option<String>,
    /// Frames read (1 for a still) and frames with a face.
    pub frames: usize,
    pub frames_with_face: usize,
    pub attempts: Vec<AttemptOutcome>,
}

/// The evaluation's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LivenessReport {
    pub config: LivenessConfig,
    pub window_ms: u32,
    pub attacks: Vec<AttackFigures>,
    pub bona_fide: Vec<BonaFideFigures>,
    pub files: Vec<FileOutcome>,
}

impl LivenessReport {
    /// The APCER of `attack` on `medium`, if that type was presented.
    pub fn apcer(&self, medium: Medium, attack: &str) -> Option<f64> {
        self.attacks.iter().find(|a| a.medium == medium && a.attack == attack).map(|a| a.apcer)
    }

    /// The BPCER on `medium`, if bona fide presentations were made.
    pub fn bpcer(&self, medium: Medium) -> Option<f64> {
        self.bona_fide.iter().find(|b| b.medium == medium).map(|b| b.bpcer)
    }
}

/// Runs every sample of `data`: stills through `assess_still`, clips (decoded
/// by `reader`) through [`Attempts`]. `progress` hears about each file done.
pub fn evaluate(
    pipeline: &FacePipeline,
    checker: &LivenessChecker,
    data: &DataSet,
    reader: &mut dyn FrameReader,
    options: EvalOptions,
    progress: &mut dyn FnMut(&FileOutcome),
) -> Result<LivenessReport, LivenessEvalError> {
    let mut files = Vec::with_capacity(data.stills.len() + data.videos.len());
    for sample in &data.stills {
        let outcome = still(pipeline, checker, sample)?;
        progress(&outcome);
        files.push(outcome);
    }
    for sample in &data.videos {
        let outcome = clip(pipeline, checker, sample, reader, options)?;
        progress(&outcome);
        files.push(outcome);
    }
    Ok(summarise(*checker.config(), options, files))
}

fn primary(pipeline: &FacePipeline, image: &RgbImage) -> Result<Option<Detection>, InferenceError> {
    let faces = pipeline.detect(image)?;
    Ok(primary_face(&faces, image.width(), image.height()).and_then(|i| faces.get(i).copied()))
}

fn still(
    pipeline: &FacePipeline,
    checker: &LivenessChecker,
    sample: &Sample,
) -> Result<FileOutcome, LivenessEvalError> {
    let read_error = |message: String| LivenessEvalError::Read { path: sample.path.display().to_string(), message };
    let bytes = std::fs::read(&sample.path).map_err(|e| read_error(e.to_string()))?;
    let image = crate::decode_image(&bytes).map_err(|e| read_error(e.to_string()))?;
    let face = primary(pipeline, &image)?;
    let mut attempts = Vec::new();
    if let Some(face) = &face {
        let result = checker.assess_still(&image, face)?;
        attempts.push(AttemptOutcome { started_ms: 0, end: AttemptEnd::Concluded, result });
    }
    Ok(FileOutcome {
        path: sample.path.display().to_string(),
        medium: Medium::Still,
        attack: sample.attack.clone(),
        frames: 1,
        frames_with_face: usize::from(face.is_some()),
        attempts,
    })
}

fn clip(
    pipeline: &FacePipeline,
    checker: &LivenessChecker,
    sample: &Sample,
    reader: &mut dyn FrameReader,
    options: EvalOptions,
) -> Result<FileOutcome, LivenessEvalError> {
    let mut attempts = Attempts::new(checker, options);
    let (mut frames, mut with_face) = (0, 0);
    let mut visit = |at: Duration, image: &RgbImage| -> Result<(), InferenceError> {
        let face = primary(pipeline, image)?;
        frames += 1;
        with_face += usize::from(face.is_some());
        attempts.frame(image, face.as_ref(), at)
    };
    reader.read(&sample.path, &mut visit).map_err(|e| match e {
        FrameReadError::Inference(e) => LivenessEvalError::Inference(e),
        FrameReadError::Source(message) => LivenessEvalError::Read { path: sample.path.display().to_string(), message },
    })?;
    Ok(FileOutcome {
        path: sample.path.display().to_string(),
        medium: Medium::Video,
        attack: sample.attack.clone(),
        frames,
        frames_with_face: with_face,
        attempts: attempts.finish(),
    })
}

/// The smallest and largest value of a cue over a group's rated attempts
/// (the track medians): where the thresholds sit between groups.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span {
    pub min: f32,
    pub max: f32,
}

impl Span {
    fn widen(span: &mut Option<Span>, value: f32) {
        let s = span.get_or_insert(Span { min: value, max: value });
        s.min = s.min.min(value);
        s.max = s.max.max(value);
    }
}

#[derive(Default)]
struct Group {
    files: usize,
    no_face: usize,
    incomplete: usize,
    counts: Counts,
    moire: Option<Span>,
    edges: Option<Span>,
}

/// Figures per (medium, attack type) and per medium for bona fide files.
pub fn summarise(config: LivenessConfig, options: EvalOptions, files: Vec<FileOutcome>) -> LivenessReport {
    let mut groups: BTreeMap<(Medium, Option<String>), Group> = BTreeMap::new();
    for file in &files {
        let group = groups.entry((file.medium, file.attack.clone())).or_default();
        group.files += 1;
        group.no_face += usize::from(file.frames_with_face == 0);
        for attempt in &file.attempts {
            match attempt.end {
                AttemptEnd::Incomplete => group.incomplete += 1,
                AttemptEnd::Concluded | AttemptEnd::Window => {
                    let verdict = match (file.medium, attempt.result.verdict) {
                        (Medium::Still, Verdict::Unsure) => Verdict::Live,
                        (_, verdict) => verdict,
                    };
                    group.counts.add(verdict);
                    Span::widen(&mut group.moire, attempt.result.moire);
                    Span::widen(&mut group.edges, attempt.result.edges);
                }
            }
        }
    }
    let mut attacks = Vec::new();
    let mut bona_fide = Vec::new();
    for ((medium, attack), g) in groups {
        match attack {
            Some(attack) => attacks.push(AttackFigures {
                medium,
                attack,
                files: g.files,
                no_face: g.no_face,
                incomplete: g.incomplete,
                counts: g.counts,
                apcer: g.counts.live_rate(),
                moire: g.moire,
                edges: g.edges,
            }),
            None => bona_fide.push(BonaFideFigures {
                medium,
                files: g.files,
                no_face: g.no_face,
                incomplete: g.incomplete,
                counts: g.counts,
                bpcer: g.counts.refused_rate(),
                moire: g.moire,
                edges: g.edges,
            }),
        }
    }
    let window_ms = u32::try_from(options.window.as_millis()).unwrap_or(u32::MAX);
    LivenessReport { config, window_ms, attacks, bona_fide, files }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{Landmarks, Point};
    use image::Rgb;

    fn face(x: f32) -> Detection {
        let bbox = BoundingBox { x, y: 40.0, width: 80.0, height: 100.0 };
        let l = |dx: f32, dy: f32| Point::new(x + dx, 40.0 + dy);
        Detection {
            bbox,
            landmarks: Landmarks([l(25.0, 40.0), l(55.0, 40.0), l(40.0, 60.0), l(28.0, 80.0), l(52.0, 80.0)]),
            score: 0.9,
        }
    }

    fn frame() -> RgbImage {
        RgbImage::from_fn(240, 200, |x, y| {
            let v = 100 + ((x * 7 + y * 13) % 23) as u8;
            Rgb([v, v, v])
        })
    }

    #[test]
    fn identical_frames_end_each_attempt_as_frozen_and_a_gap_makes_an_incomplete_one() {
        let checker = LivenessChecker::new(LivenessConfig::default(), None).unwrap();
        let mut attempts = Attempts::new(&checker, EvalOptions::default());
        let image = frame();
        let f = face(60.0);
        for i in 0..60u64 {
            attempts.frame(&image, Some(&f), Duration::from_millis(40 * i)).unwrap();
        }
        // Identical frames: each attempt is frozen after `frozen-pairs` comparisons
        // (11 frames); no face for a second ends the sixth before that.
        attempts.frame(&image, None, Duration::from_millis(3400)).unwrap();
        // A face elsewhere at once starts another, which the clip's end cuts short.
        attempts.frame(&image, Some(&f), Duration::from_millis(3440)).unwrap();
        attempts.frame(&image, Some(&face(150.0)), Duration::from_millis(3480)).unwrap();
        let outcomes = attempts.finish();
        let ends: Vec<(AttemptEnd, Verdict)> = outcomes.iter().map(|o| (o.end, o.result.verdict)).collect();
        assert_eq!(
            ends,
            [
                (AttemptEnd::Concluded, Verdict::Spoof),
                (AttemptEnd::Concluded, Verdict::Spoof),
                (AttemptEnd::Concluded, Verdict::Spoof),
                (AttemptEnd::Concluded, Verdict::Spoof),
                (AttemptEnd::Concluded, Verdict::Spoof),
                (AttemptEnd::Incomplete, Verdict::Unsure),
                (AttemptEnd::Incomplete, Verdict::Unsure),
                (AttemptEnd::Incomplete, Verdict::Unsure),
            ],
            "{outcomes:?}"
        );
        assert!(outcomes[..5].iter().all(|o| o.result.reason.code() == "frozen"), "{outcomes:?}");
        assert_eq!(outcomes[1].started_ms, 440);
    }

    #[test]
    fn rates_count_unsure_as_refused_and_leave_incomplete_attempts_out() {
        let config = LivenessConfig::default();
        let checker = LivenessChecker::new(config, None).unwrap();
        let result = |verdict| {
            let mut r = checker.track().result();
            r.verdict = verdict;
            r
        };
        let attempt = |end, verdict| AttemptOutcome { started_ms: 0, end, result: result(verdict) };
        let file = |attack: Option<&str>, attempts| FileOutcome {
            path: "x".into(),
            medium: Medium::Video,
            attack: attack.map(str::to_owned),
            frames: 10,
            frames_with_face: 10,
            attempts,
        };
        let report = summarise(
            config,
            EvalOptions::default(),
            vec![
                file(
                    None,
                    vec![attempt(AttemptEnd::Concluded, Verdict::Live), attempt(AttemptEnd::Window, Verdict::Unsure)],
                ),
                file(None, vec![attempt(AttemptEnd::Incomplete, Verdict::Unsure)]),
                file(Some("print"), vec![attempt(AttemptEnd::Concluded, Verdict::Spoof); 3]),
                file(Some("print"), vec![attempt(AttemptEnd::Concluded, Verdict::Live)]),
            ],
        );
        assert_eq!(report.bpcer(Medium::Video), Some(0.5));
        assert_eq!(report.bona_fide[0].incomplete, 1);
        assert_eq!(report.apcer(Medium::Video, "print"), Some(0.25));
        assert_eq!(report.apcer(Medium::Still, "print"), None);
    }
}
