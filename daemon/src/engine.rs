//! From frames to door decisions: detect, follow the served face, gate
//! quality, check liveness, and once per walk-up match the best frames
//! against the gallery and decide `grant`, `deny`, `unknown` or `spoof`.
//!
//! Synchronous CPU work; the caller runs it on its own thread and records
//! the decisions (audit outbox first, then actuation).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate_face::thresholds::{Identification, OpenSetRule};
use facegate_face::{AssessedFace, FaceError, FacePipeline, InferenceError, Match, RgbImage, Template};
use facegate_protocol::{Decision, IdentityId, IdentityRecord, LivenessVerdict, StageMillis};

use facegate_face::liveness::LivenessChecker;

use crate::freshness::{Freshness, FreshnessGate};
use crate::liveness::LivenessSession;
use crate::track::{TrackEvent, Tracker, TrackerConfig};

/// A match and the record of its identity, from one gallery read.
pub type Identified = (Match<IdentityId>, Option<IdentityRecord>);

/// What the engine needs from the gallery shard.
pub trait GalleryLookup: Send + Sync {
    /// The two best identities for `probe`, best first, each with its
    /// record, read together under one lock: a removal lands before or
    /// after both, never between (a record is `None` only when the gallery
    /// holds templates of an identity without its record).
    fn identify(&self, probe: &Template) -> Result<Vec<Identified>, FaceError>;
    /// Number of enrolled identities.
    fn identities(&self) -> usize;
}

/// The door decision from the identification, the matched identity's
/// record (from the same gallery read), the liveness conclusion and the
/// wall clock (unix seconds): decision, identity and reason.
fn judge(
    identification: &Identification<IdentityId>,
    record: Option<&IdentityRecord>,
    liveness: &crate::liveness::Conclusion,
    rule: &OpenSetRule,
    now: i64,
    window: Duration,
) -> (Decision, Option<IdentityId>, String) {
    let (mut decision, identity, mut reason) = match identification {
        Identification::Identified { label, score, .. } => {
            (Decision::Grant, Some(label.clone()), format!("matched with score {score:.4}"))
        }
        Identification::Ambiguous { label, score, runner_up } => (
            Decision::Unknown,
            None,
            format!("ambiguous: best {label} at {score:.4}, runner-up at {runner_up:.4} (margin {:.3})", rule.margin),
        ),
        Identification::NoMatch { best: Some(best) } => {
            (Decision::Unknown, None, format!("best score {best:.4} below {:.4}", rule.threshold))
        }
        Identification::NoMatch { best: None } => (Decision::Unknown, None, "nobody enrolled to compare with".into()),
    };
    match liveness.verdict {
        LivenessVerdict::Spoof => {
            decision = Decision::Spoof;
            reason = format!("presentation attack: {}", liveness.reason);
        }
        LivenessVerdict::Unsure => {
            decision = Decision::Spoof;
            reason = format!("not shown live within {} ms: {}", window.as_millis(), liveness.reason);
        }
        LivenessVerdict::Live => match (decision, record) {
            (Decision::Grant, Some(record)) if !record.valid_at(now) => {
                decision = Decision::Deny;
                reason = format!("{} is enrolled but not allowed now (validity window)", record.id);
            }
            (Decision::Grant, None) => {
                // Templates without a record: never a grant, and the
                // (removed) person is not named.
                return (Decision::Unknown, None, "matched an identity that is no longer enrolled".into());
            }
            _ => {}
        },
    }
    (decision, identity, reason)
}

/// How the 1:N threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdPolicy {
    /// A fixed threshold and margin (the shipped ones, or overrides).
    Fixed(OpenSetRule),
    /// The threshold rises with the gallery size to hold a target FPIR.
    TargetFpir { fpir: f64, margin: f32 },
}

/// Engine settings (from the `[decision]` configuration).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub frames: usize,
    pub window: Duration,
    pub cooldown: Duration,
    pub tracker: TrackerConfig,
    pub policy: ThresholdPolicy,
    pub liveness: Arc<LivenessChecker>,
}

/// One door decision, ready for the audit trail and the sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRecord {
    pub decision: Decision,
    pub identity: Option<IdentityId>,
    pub name: Option<String>,
    /// Best similarity found (any identity), when a template was made.
    pub score: Option<f32>,
    pub liveness: LivenessVerdict,
    pub liveness_score: Option<f32>,
    /// The liveness cue that decided (a stable code) and every cue's figure.
    pub liveness_code: &'static str,
    pub liveness_cues: Option<crate::liveness::CueScores>,
    pub reason: String,
    /// The gallery was stale when this was decided ([`FreshnessGate`]): a
    /// `deny` with this set would have been a `grant`.
    pub stale_gallery: bool,
    pub track: u64,
    /// Frames of the attempt that showed the face.
    pub frames: u32,
    /// Stream time of the attempt's first and deciding frames.
    pub started_at: Duration,
    pub decided_at: Duration,
    pub timings: StageMillis,
}

/// Per-frame stage times, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameTimings {
    pub detect_ms: f64,
    pub align_ms: f64,
    pub quality_ms: f64,
    pub liveness_ms: f64,
    pub embed_ms: f64,
    pub match_ms: f64,
}

/// What one frame produced.
#[derive(Debug, Default)]
pub struct FrameOutcome {
    pub decisions: Vec<DecisionRecord>,
    pub timings: FrameTimings,
    pub faces: usize,
}

struct Candidate {
    rank: f32,
    chip: RgbImage,
    mirrored: Option<RgbImage>,
}

struct Attempt {
    track: u64,
    started_at: Duration,
    frames: u32,
    candidates: Vec<Candidate>,
    liveness: LivenessSession,
    timings: StageMillis,
    decided: bool,
}

impl Attempt {
    fn new(track: u64, at: Duration, checker: &Arc<LivenessChecker>) -> Self {
        Self {
            track,
            started_at: at,
            frames: 0,
            candidates: Vec::new(),
            liveness: LivenessSession::new(Arc::clone(checker)),
            timings: StageMillis::default(),
            decided: false,
        }
    }
}

/// The decision engine for one camera.
pub struct Engine {
    pipeline: Arc<FacePipeline>,
    gallery: Arc<dyn GalleryLookup>,
    config: EngineConfig,
    tracker: Tracker,
    attempt: Option<Attempt>,
    /// Stream time of the last grant/deny per identity (cooldown).
    recent: HashMap<IdentityId, Duration>,
    clock: Box<dyn Fn() -> i64 + Send>,
    freshness: FreshnessGate,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.config).finish_non_exhaustive()
    }
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

impl Engine {
    pub fn new(pipeline: Arc<FacePipeline>, gallery: Arc<dyn GalleryLookup>, config: EngineConfig) -> Self {
        let tracker = Tracker::new(config.tracker);
        Self {
            pipeline,
            gallery,
            config,
            tracker,
            attempt: None,
            recent: HashMap::new(),
            clock: Box::new(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
            }),
            freshness: FreshnessGate::off(),
        }
    }

    /// Grants only while `gate` says the gallery is fresh (or to
    /// `offline_access` identities); never stale unless set.
    pub fn set_freshness(&mut self, gate: FreshnessGate) {
        self.freshness = gate;
    }

    /// Replaces the wall clock used for validity windows (unix seconds).
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Processes one frame taken at stream time `at`.
    pub fn process(&mut self, image: &RgbImage, at: Duration) -> Result<FrameOutcome, InferenceError> {
        let mut outcome = FrameOutcome::default();
        let started = Instant::now();
        let faces = self.pipeline.detect(image)?;
        outcome.timings.detect_ms = ms(started);
        outcome.faces = faces.len();
        let served = facegate_face::pipeline::primary_face(&faces, image.width(), image.height()).map(|i| faces[i]);
        match self.tracker.observe(at, served.as_ref().map(|f| &f.bbox)) {
            TrackEvent::Idle | TrackEvent::Missing { .. } => {}
            TrackEvent::Ended { .. } => self.close_attempt(at, &mut outcome)?,
            TrackEvent::Started { id, .. } => {
                self.close_attempt(at, &mut outcome)?;
                self.attempt = Some(Attempt::new(id, at, &self.config.liveness));
            }
            TrackEvent::Continued { .. } => {}
        }
        let (Some(face), Some(attempt)) = (served, self.attempt.as_mut()) else {
            return Ok(outcome);
        };
        attempt.frames += 1;
        attempt.timings.detect += outcome.timings.detect_ms as f32;
        if attempt.decided {
            return Ok(outcome);
        }
        let t = Instant::now();
        let Some(assessed) = self.pipeline.assess(image, &face) else {
            return Ok(outcome);
        };
        // assess() cuts the chip and measures quality; attribute it to align.
        outcome.timings.align_ms = ms(t);
        attempt.timings.align += outcome.timings.align_ms as f32;
        let t = Instant::now();
        attempt.liveness.observe(image, &assessed, at);
        outcome.timings.liveness_ms = ms(t);
        attempt.timings.liveness += outcome.timings.liveness_ms as f32;
        if assessed.quality.passed() {
            admit(attempt, image, assessed, &self.pipeline, self.config.frames);
        }
        let enough = attempt.candidates.len() >= self.config.frames && attempt.liveness.conclusive();
        let expired = at.saturating_sub(attempt.started_at) >= self.config.window && !attempt.candidates.is_empty();
        if (enough || expired)
            && let Some(record) = self.decide(at, &mut outcome.timings)?
        {
            outcome.decisions.push(record);
        }
        Ok(outcome)
    }

    /// Decides an open attempt at the end of the stream.
    pub fn finish(&mut self, at: Duration) -> Result<Vec<DecisionRecord>, InferenceError> {
        let mut outcome = FrameOutcome::default();
        self.tracker.finish();
        self.close_attempt(at, &mut outcome)?;
        Ok(outcome.decisions)
    }

    /// A track ended: an undecided attempt with enough good frames is decided
    /// with what it has; a glimpse (fewer good frames) is dropped.
    fn close_attempt(&mut self, at: Duration, outcome: &mut FrameOutcome) -> Result<(), InferenceError> {
        let decide = self.attempt.as_ref().is_some_and(|a| !a.decided && a.candidates.len() >= self.config.frames);
        if decide && let Some(record) = self.decide(at, &mut outcome.timings)? {
            outcome.decisions.push(record);
        }
        self.attempt = None;
        Ok(())
    }

    fn rule(&self) -> OpenSetRule {
        match self.config.policy {
            ThresholdPolicy::Fixed(rule) => rule,
            ThresholdPolicy::TargetFpir { fpir, margin } => {
                let n = self.gallery.identities();
                let threshold = self
                    .pipeline
                    .open_set_threshold(fpir, n)
                    .map(|t| t.threshold)
                    .or(self.pipeline.match_threshold())
                    .unwrap_or(1.0);
                OpenSetRule { threshold, margin }
            }
        }
    }

    fn decide(&mut self, at: Duration, timings: &mut FrameTimings) -> Result<Option<DecisionRecord>, InferenceError> {
        let Some(attempt) = self.attempt.as_mut() else { return Ok(None) };
        attempt.decided = true;
        let t = Instant::now();
        let mut probe: Option<Vec<f32>> = None;
        for candidate in &attempt.candidates {
            let template = self.pipeline.embedder().embed_chips(&candidate.chip, candidate.mirrored.as_ref())?;
            match probe.as_mut() {
                Some(sum) => sum.iter_mut().zip(&template.vector).for_each(|(a, b)| *a += b),
                None => probe = Some(template.vector),
            }
        }
        timings.embed_ms = ms(t);
        attempt.timings.embed += timings.embed_ms as f32;
        let probe = probe.and_then(|v| Template::from_embedding(self.pipeline.model_id(), v));
        let t = Instant::now();
        let found = match &probe {
            Some(probe) => self.gallery.identify(probe).unwrap_or_else(|error| {
                log::error!(error:% = error; "gallery search failed");
                Vec::new()
            }),
            None => Vec::new(),
        };
        let top: Vec<Match<IdentityId>> = found.iter().map(|(m, _)| m.clone()).collect();
        let rule = self.rule();
        let identification = rule.decide(&top);
        timings.match_ms = ms(t);
        let attempt = self
            .attempt
            .as_mut()
            .ok_or_else(|| InferenceError { model: String::new(), message: "attempt vanished".into() })?;
        attempt.timings.matching += timings.match_ms as f32;
        let liveness = attempt.liveness.conclusion();
        let best_score = top.first().map(|m| m.score);
        let record = match &identification {
            Identification::Identified { label, .. } => {
                found.iter().find(|(m, _)| &m.label == label).and_then(|(_, record)| record.clone())
            }
            _ => None,
        };
        let (mut decision, mut identity, mut reason) =
            judge(&identification, record.as_ref(), &liveness, &rule, (self.clock)(), self.config.window);
        let mut stale_gallery = false;
        if decision == Decision::Grant
            && let stale @ Freshness::Stale { .. } = self.freshness.check_now()
        {
            // Fail secure: a stale gallery may still hold someone the centre
            // removed.
            if record.as_ref().is_some_and(|r| r.offline_access) {
                reason = format!("{reason}; {stale}; granted: offline access");
            } else {
                decision = Decision::Deny;
                stale_gallery = true;
                reason = format!("{stale}; only offline-access identities are granted");
            }
        }
        if matches!(decision, Decision::Grant | Decision::Deny)
            && let Some(id) = &identity
        {
            if let Some(last) = self.recent.get(id)
                && at.saturating_sub(*last) < self.config.cooldown
            {
                log::debug!(identity = id.as_str(); "decision suppressed by cooldown");
                return Ok(None);
            }
            self.recent.insert(id.clone(), at);
        }
        if decision == Decision::Unknown {
            identity = None;
        }
        let attempt = self
            .attempt
            .as_ref()
            .ok_or_else(|| InferenceError { model: String::new(), message: "attempt vanished".into() })?;
        Ok(Some(DecisionRecord {
            decision,
            name: identity.as_ref().and(record.map(|r| r.name)),
            identity,
            score: best_score,
            liveness: liveness.verdict,
            liveness_score: liveness.score,
            liveness_code: liveness.code,
            liveness_cues: liveness.cues,
            reason,
            stale_gallery,
            track: attempt.track,
            frames: attempt.frames,
            started_at: attempt.started_at,
            decided_at: at,
            timings: attempt.timings,
        }))
    }
}

/// Keeps the best `keep` quality-passing frames of the attempt.
fn admit(attempt: &mut Attempt, image: &RgbImage, face: AssessedFace, pipeline: &FacePipeline, keep: usize) {
    let rank = face.quality.rank();
    if attempt.candidates.len() >= keep {
        let Some((worst, worst_rank)) =
            attempt.candidates.iter().enumerate().map(|(i, c)| (i, c.rank)).min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            return;
        };
        if rank <= worst_rank {
            return;
        }
        attempt.candidates.swap_remove(worst);
    }
    let mirrored = if pipeline.embedder().mirror() {
        pipeline.embedder().geometry().cut(image, &face.detection.landmarks, true)
    } else {
        None
    };
    attempt.candidates.push(Candidate { rank, chip: face.chip, mirrored });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn live() -> crate::liveness::Conclusion {
        crate::liveness::Conclusion {
            verdict: LivenessVerdict::Live,
            score: Some(0.9),
            code: "test",
            reason: "test".into(),
            cues: None,
        }
    }

    fn alice(valid_until: Option<i64>) -> IdentityRecord {
        IdentityRecord {
            id: IdentityId::new("alice").unwrap(),
            name: "Alice".into(),
            valid_from: None,
            valid_until,
            version: 1,
            offline_access: false,
        }
    }

    fn identified() -> Identification<IdentityId> {
        Identification::Identified { label: IdentityId::new("alice").unwrap(), score: 0.9, runner_up: None }
    }

    const RULE: OpenSetRule = OpenSetRule { threshold: 0.5, margin: 0.05 };
    const WINDOW: Duration = Duration::from_secs(3);

    #[test]
    fn a_match_whose_record_is_gone_is_never_a_grant() {
        // The gallery answered with a match but no record: removed between
        // the two, or templates left behind. Either way nobody to admit.
        let (decision, identity, reason) = judge(&identified(), None, &live(), &RULE, 1_000, WINDOW);
        assert_ne!(decision, Decision::Grant, "{reason}");
        assert_eq!(identity, None, "a removed person is not named");
    }

    #[test]
    fn a_match_with_a_current_record_is_granted_and_an_expired_one_denied() {
        let record = alice(Some(2_000));
        assert_eq!(judge(&identified(), Some(&record), &live(), &RULE, 1_000, WINDOW).0, Decision::Grant);
        assert_eq!(judge(&identified(), Some(&record), &live(), &RULE, 2_000, WINDOW).0, Decision::Deny);
    }

    /// The shard's lookup under a removal racing it: every match comes with
    /// its record, because both are read under one lock.
    #[test]
    fn identify_returns_every_match_with_its_record_while_removals_race_it() {
        use crate::store::{GalleryModel, GalleryStore, StoreConfig};
        use facegate_protocol::TemplateRecord;
        let root = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(root.path().join("db"), GalleryModel { id: "m".into(), dim: 4 });
        let shard =
            std::sync::Arc::new(crate::store::open_with_key_file(&config, &root.path().join("device.key")).unwrap());
        let unit = [1f32, 0.0, 0.0, 0.0];
        let template =
            TemplateRecord { model_id: "m".into(), vector: unit.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let probe = Template::from_embedding("m", unit.to_vec()).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (shard, stop) = (shard.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rounds = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && rounds < 200 {
                    shard.upsert_local(alice(None), vec![template.clone()]).unwrap();
                    shard.remove_local(&IdentityId::new("alice").unwrap()).unwrap();
                    rounds += 1;
                }
            })
        };
        let mut seen = 0;
        while !writer.is_finished() {
            for (found, record) in shard.identify(&probe).unwrap() {
                assert_eq!(record.map(|r| r.id), Some(found.label), "a match without its record");
                seen += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        eprintln!("{seen} matches checked");
    }
}
