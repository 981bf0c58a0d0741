//! `facegate-daemon eval liveness`: APCER per attack type and BPCER of the
//! presentation-attack detection on a labelled data directory (layout in
//! `facegate_face::liveness::dataset`), at a daemon configuration — the
//! built-in one unless `--config` names another. Clips are decoded by the
//! daemon's own frame sources; attempts are cut as the kiosk cuts them
//! (`facegate_face::liveness::eval`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use facegate_daemon::config::{self, DaemonConfig, ProcessEnvironment};
use facegate_daemon::source::{self, Pace, SourceError, SourceSpec};
use facegate_daemon::{bench, exit, kiosk, liveness};
use facegate_face::InferenceError;
use facegate_face::RgbImage;
use facegate_face::liveness::dataset::DataSet;
use facegate_face::liveness::eval::{
    self, EvalOptions, FrameReadError, FrameReader, LivenessEvalError, LivenessReport,
};

#[derive(Debug, Args)]
pub(crate) struct LivenessEvalArgs {
    /// Data directory: faces/spoofs.csv, faces/manifest.csv, videos/videos.csv.
    #[arg(long)]
    data: PathBuf,
    /// Print one JSON object (figures, every file's attempts, the machine).
    #[arg(long)]
    json: bool,
    /// Daemon configuration to take [models], [decision] and [liveness] from
    /// (default: the built-in configuration, as shipped).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also run the attacks with the detector's score threshold lowered to
    /// this, so that attacks the detector misses still reach liveness (0: skip).
    #[arg(long, default_value_t = 0.1)]
    stress_detector_score: f32,
    /// Frame rate of clips stored as directories of frames.
    #[arg(long, default_value_t = 25.0)]
    fps: f64,
    /// Print each file's attempts to stderr as it is done.
    #[arg(long)]
    verbose: bool,
}

/// The JSON output.
#[derive(Debug, Serialize)]
struct Output {
    data: String,
    config: String,
    detector_max_side: Option<u32>,
    seconds: f64,
    cpu: String,
    report: LivenessReport,
    /// Attacks only, detector score threshold lowered.
    stress: Option<StressReport>,
}

#[derive(Debug, Serialize)]
struct StressReport {
    detector_score: f32,
    report: LivenessReport,
}

/// Clips through the daemon's replay source (video files via OpenCV,
/// directories of frames), as fast as possible. Unreadable single frames
/// are skipped.
struct SourceFrames {
    fps: f64,
}

impl FrameReader for SourceFrames {
    fn read(
        &mut self,
        path: &Path,
        visit: &mut dyn FnMut(Duration, &RgbImage) -> Result<(), InferenceError>,
    ) -> Result<(), FrameReadError> {
        let spec =
            SourceSpec::Replay { path: path.to_path_buf(), pace: Pace::AsFastAsPossible, fps: self.fps, repeat: false };
        let mut frames = source::open(&spec).map_err(|e| FrameReadError::Source(e.to_string()))?;
        loop {
            match frames.next_frame() {
                Ok(Some(frame)) => visit(frame.timestamp, &frame.image)?,
                Ok(None) => return Ok(()),
                Err(SourceError::BadFrame { .. }) => continue,
                Err(error) => return Err(FrameReadError::Source(error.to_string())),
            }
        }
    }
}

fn status(error: &LivenessEvalError) -> u8 {
    match error {
        LivenessEvalError::DataSet(facegate_face::liveness::dataset::DataSetError::Read { .. }) => exit::NO_INPUT,
        LivenessEvalError::DataSet(_) => exit::DATA,
        LivenessEvalError::Read { .. } => exit::DATA,
        LivenessEvalError::Inference(_) => exit::SOFTWARE,
    }
}

/// Runs the evaluation; on failure, the exit status and the error.
pub(crate) fn run(args: &LivenessEvalArgs) -> Result<(), (u8, anyhow::Error)> {
    let (config, origin) = match &args.config {
        Some(path) => (DaemonConfig::load(path, &ProcessEnvironment), path.display().to_string()),
        None => (
            DaemonConfig::parse(config::DEFAULT_CONFIG, "built-in defaults", &ProcessEnvironment),
            "built-in defaults".to_owned(),
        ),
    };
    let config = config.map_err(|e| (exit::CONFIG, e.into()))?;
    let data = DataSet::read(&args.data).map_err(|e| {
        let error = LivenessEvalError::DataSet(e);
        (status(&error), error.into())
    })?;
    let checker = liveness::checker(config.liveness, config.models.liveness.as_deref())
        .map_err(|e| (exit::UNAVAILABLE, e.into()))?;
    let pipeline =
        kiosk::load_pipeline(&config).context("loading the face models").map_err(|e| (exit::UNAVAILABLE, e))?;
    let d = &config.decision;
    let options = EvalOptions {
        window: Duration::from_millis(d.window_ms),
        max_gap: Duration::from_millis(d.track_timeout_ms),
        min_iou: d.track_iou,
    };
    let verbose = args.verbose;
    let mut progress = |file: &eval::FileOutcome| {
        if verbose {
            let attempts: Vec<String> = file
                .attempts
                .iter()
                .map(|a| format!("{}@{}ms:{}", a.result.verdict.as_str(), a.started_ms, a.result.reason.code()))
                .collect();
            eprintln!("{} [{}] {}", file.path, file.attack.as_deref().unwrap_or("bona fide"), attempts.join(" "));
        }
    };
    let started = Instant::now();
    let mut reader = SourceFrames { fps: args.fps };
    let report = eval::evaluate(&pipeline, &checker, &data, &mut reader, options, &mut progress)
        .map_err(|e| (status(&e), e.into()))?;
    let stress = if args.stress_detector_score > 0.0 {
        let mut permissive = config.clone();
        permissive.models.detector_score = Some(args.stress_detector_score);
        let pipeline =
            kiosk::load_pipeline(&permissive).context("loading the face models").map_err(|e| (exit::UNAVAILABLE, e))?;
        let report = eval::evaluate(&pipeline, &checker, &data.attacks_only(), &mut reader, options, &mut progress)
            .map_err(|e| (status(&e), e.into()))?;
        Some(StressReport { detector_score: args.stress_detector_score, report })
    } else {
        None
    };
    let output = Output {
        data: args.data.display().to_string(),
        config: origin,
        detector_max_side: config.models.detector_max_side,
        seconds: started.elapsed().as_secs_f64(),
        cpu: bench::cpu_model(),
        report,
        stress,
    };
    if args.json {
        let text = serde_json::to_string(&output).context("encoding JSON").map_err(|e| (exit::SOFTWARE, e))?;
        println!("{text}");
    } else {
        print_text(&output);
    }
    Ok(())
}

fn print_text(output: &Output) {
    println!(
        "liveness on {} at {} (decision window {} ms), {:.0} s on {}",
        output.data, output.config, output.report.window_ms, output.seconds, output.cpu
    );
    print_figures(&output.report);
    if let Some(stress) = &output.stress {
        println!("attacks again, detector score threshold lowered to {}:", stress.detector_score);
        print_figures(&stress.report);
    }
}

fn print_figures(report: &LivenessReport) {
    for a in &report.attacks {
        println!(
            "  APCER {:<5} {:<12} {:.3}  {:>3} of {:>3} attempts judged live ({} files, {} without any face, {} incomplete attempts)",
            a.medium.as_str(),
            a.attack,
            a.apcer,
            a.counts.live,
            a.counts.presentations,
            a.files,
            a.no_face,
            a.incomplete
        );
    }
    for b in &report.bona_fide {
        println!(
            "  BPCER {:<5} {:<12} {:.3}  {:>3} of {:>3} attempts refused: {} spoof, {} unsure ({} files, {} without any face, {} incomplete attempts)",
            b.medium.as_str(),
            "bona fide",
            b.bpcer,
            b.counts.spoof + b.counts.unsure,
            b.counts.presentations,
            b.counts.spoof,
            b.counts.unsure,
            b.files,
            b.no_face,
            b.incomplete
        );
    }
}
