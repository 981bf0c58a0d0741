//! `facegate-daemon eval liveness`: APCER per attack species and BPCER of
//! the presentation-attack detection on the **reporting half** of the
//! identities of a data directory (layout in
//! `facegate_face::liveness::dataset`): the attack corpus generated from its
//! photos (`facegate_face::liveness::corpus`), its attack clips and its live
//! clips, at a daemon configuration — the built-in one unless `--config`
//! names another. `--half tuning --tune` runs the threshold choice on the
//! other half (`facegate_face::liveness::held_out::tune`). `--legacy` adds
//! the per-file evaluation of the labelled stills and clips
//! (`facegate_face::liveness::eval`). Clips are decoded by the daemon's own
//! frame sources.

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
use facegate_face::liveness::corpus::Half;
use facegate_face::liveness::dataset::DataSet;
use facegate_face::liveness::eval::{
    self, EvalOptions, FrameReadError, FrameReader, LivenessEvalError, LivenessReport,
};
use facegate_face::liveness::held_out::{self, Table, Traces, Tuning};

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
    /// Which half of the identities to measure (figures are reported on the
    /// reporting half; thresholds are chosen on the tuning half).
    #[arg(long, value_enum, default_value_t = HalfArg::Reporting)]
    half: HalfArg,
    /// Identities of the half whose photos make the generated attacks.
    #[arg(long, default_value_t = 24)]
    identities: usize,
    /// Choose the deformation thresholds on this half and print them (use
    /// with `--half tuning`).
    #[arg(long)]
    tune: bool,
    /// Write the recorded cue traces to this JSON file.
    #[arg(long)]
    save_traces: Option<PathBuf>,
    /// Read cue traces from this JSON file instead of recording them.
    #[arg(long)]
    load_traces: Option<PathBuf>,
    /// Also run the per-file evaluation of the labelled stills and clips
    /// (every identity), and its detector stress run.
    #[arg(long)]
    legacy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HalfArg {
    Tuning,
    Reporting,
}

/// The JSON output.
#[derive(Debug, Serialize)]
struct Output {
    data: String,
    config: String,
    detector_max_side: Option<u32>,
    seconds: f64,
    cpu: String,
    /// Per species on the chosen half.
    table: Table,
    /// The thresholds chosen on this half (`--tune`).
    tuning: Option<Tuning>,
    /// The per-file evaluation (`--legacy`).
    report: Option<LivenessReport>,
    /// Attacks only, detector score threshold lowered (`--legacy`).
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
        let spec = SourceSpec::Replay {
            path: path.to_path_buf(),
            pace: Pace::AsFastAsPossible,
            fps: self.fps,
            repeat: false,
            sample_fps: None,
        };
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
    let half = match args.half {
        HalfArg::Tuning => Half::Tuning,
        HalfArg::Reporting => Half::Reporting,
    };
    let traces: Traces = match &args.load_traces {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading {}", path.display()))
                .map_err(|e| (exit::NO_INPUT, e))?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("decoding {}", path.display()))
                .map_err(|e| (exit::DATA, e))?
        }
        None => {
            let photos =
                held_out::photos(&pipeline, &data, half, args.identities).map_err(|e| (status(&e), e.into()))?;
            let mut note = |what: &str| {
                if verbose {
                    eprintln!("recorded {what}");
                }
            };
            let setup = held_out::Setup { pipeline: &pipeline, checker: &checker, options };
            held_out::record(setup, half, &photos, &data, &mut reader, &mut note).map_err(|e| (status(&e), e.into()))?
        }
    };
    if traces.half != half {
        return Err((exit::USAGE, anyhow::anyhow!("the traces are of the {} half", traces.half.as_str())));
    }
    if let Some(path) = &args.save_traces {
        let text = serde_json::to_vec(&traces).context("encoding the traces").map_err(|e| (exit::SOFTWARE, e))?;
        std::fs::write(path, text)
            .with_context(|| format!("writing {}", path.display()))
            .map_err(|e| (exit::CANT_CREATE, e))?;
    }
    let table = held_out::summarise(config.liveness, &traces);
    let tuning = args.tune.then(|| held_out::tune(config.liveness, &traces));
    let (report, stress) = if args.legacy {
        let report = eval::evaluate(&pipeline, &checker, &data, &mut reader, options, &mut progress)
            .map_err(|e| (status(&e), e.into()))?;
        let stress = if args.stress_detector_score > 0.0 {
            let mut permissive = config.clone();
            permissive.models.detector_score = Some(args.stress_detector_score);
            let pipeline = kiosk::load_pipeline(&permissive)
                .context("loading the face models")
                .map_err(|e| (exit::UNAVAILABLE, e))?;
            let report = eval::evaluate(&pipeline, &checker, &data.attacks_only(), &mut reader, options, &mut progress)
                .map_err(|e| (status(&e), e.into()))?;
            Some(StressReport { detector_score: args.stress_detector_score, report })
        } else {
            None
        };
        (Some(report), stress)
    } else {
        (None, None)
    };
    let output = Output {
        data: args.data.display().to_string(),
        config: origin,
        detector_max_side: config.models.detector_max_side,
        seconds: started.elapsed().as_secs_f64(),
        cpu: bench::cpu_model(),
        table,
        tuning,
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
    println!("liveness on {} at {}, {:.0} s on {}", output.data, output.config, output.seconds, output.cpu);
    print_table(&output.table);
    if let Some(tuning) = &output.tuning {
        let c = &tuning.config;
        println!(
            "thresholds chosen on the {} half ({} settings tried): residual-live = {:.1}, local-live = {:.1}, feature-live = {:.1}, still-motion = {:.2}, live-pairs = {}",
            tuning.table.half.as_str(),
            tuning.candidates,
            c.residual_live,
            c.local_live,
            c.feature_live,
            c.still_motion,
            c.live_pairs
        );
        print_table(&tuning.table);
    }
    if let Some(report) = &output.report {
        println!("per-file evaluation (every identity, decision window {} ms):", report.window_ms);
        print_figures(report);
    }
    if let Some(stress) = &output.stress {
        println!("attacks again, detector score threshold lowered to {}:", stress.detector_score);
        print_figures(&stress.report);
    }
}

fn print_table(table: &Table) {
    let c = &table.config;
    println!(
        "{} half: {} identities' photos; residual-live {:.1}, local-live {:.1}, feature-live {:.1}, still-motion {:.2}, live-pairs {}",
        table.half.as_str(),
        table.identities,
        c.residual_live,
        c.local_live,
        c.feature_live,
        c.still_motion,
        c.live_pairs
    );
    println!(
        "  {:<16} {:>4} {:>13} {:>7}  {:<15} {:>10} {:>8}  decided by",
        "species", "n", "judged live", "APCER", "95 % interval", "incomplete", "no face"
    );
    for row in &table.attacks {
        print_row(row, "judged live");
    }
    print_row(&table.bona_fide, "refused");
    let b = &table.bona_fide;
    println!(
        "  BPCER {:.3} ({} of {} live attempts refused, 95 % interval {:.3}–{:.3})",
        b.rate, b.errors, b.presentations, b.interval.0, b.interval.1
    );
    println!(
        "  latency: {:.2} ms per frame for every liveness cue, of which {:.2} ms the deformation and frozen cues ({} frames)",
        table.latency.mean_total_ms(),
        table.latency.mean_added_ms(),
        table.latency.frames
    );
}

fn print_row(row: &held_out::Row, _what: &str) {
    let decided: Vec<String> = row.decided_by.iter().map(|(code, n)| format!("{code} {n}")).collect();
    println!(
        "  {:<16} {:>4} {:>13} {:>7.3}  {:.3}–{:.3}     {:>10} {:>8}  {}",
        row.name,
        row.presentations,
        row.errors,
        row.rate,
        row.interval.0,
        row.interval.1,
        row.incomplete,
        row.no_face,
        decided.join(", ")
    );
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
