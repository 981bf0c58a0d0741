//! `facegate-daemon`: the kiosk daemon and its field tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use facegate_daemon::config::{self, DaemonConfig, ProcessEnvironment};
use facegate_daemon::kiosk::{KioskError, Recorded};
use facegate_daemon::runtime::{self, RunError};
use facegate_daemon::source::{Pace, SourceError, SourceSpec};
use facegate_daemon::{bench, evaluation, exit, inspect, service};
use facegate_face::{FacePipeline, PipelineOptions, Precision, QualityConfig};

mod eval_liveness;

#[derive(Debug, Parser)]
#[command(name = "facegate-daemon", version, about = "facegate kiosk daemon: face verification at the door")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Clone)]
struct ModelArgs {
    /// Directory of model manifests and ONNX files.
    #[arg(long, env = "FACEGATE_MODELS", global = true)]
    models: Option<PathBuf>,
    /// Detector precision (f32 or int8w); the manifest's default otherwise.
    #[arg(long, global = true)]
    detector_precision: Option<Precision>,
    /// Embedder precision (f32 or u8w); the manifest's default otherwise.
    #[arg(long, global = true)]
    embedder_precision: Option<Precision>,
    /// Average each template with its mirror image (on/off); the manifest's choice otherwise.
    #[arg(long, global = true)]
    mirror: Option<bool>,
    /// Shrink images so their longer side is at most this before detection (default 640).
    #[arg(long, global = true)]
    detector_max_side: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The kiosk's gallery database: standalone enrollment and inspection.
    #[command(subcommand)]
    Gallery(facegate_daemon::store::cli::GalleryCommand),
    /// Provision this kiosk for sync: trade the one-time token from the
    /// server's `POST /v1/devices` for a client certificate (the key is made
    /// here and never leaves the device), the broker, the signing keys and
    /// the shards. Then set `[sync] dir` to DIR in the configuration.
    Provision {
        /// The sync server's base URL (https://…; http:// only on loopback demos).
        #[arg(long)]
        server: String,
        /// The one-time provisioning token.
        #[arg(long, env = "FACEGATE_PROVISIONING_TOKEN")]
        token: String,
        /// Where to keep the certificate, key and provisioning answer.
        #[arg(long, default_value = "/var/lib/facegate/sync")]
        dir: PathBuf,
        /// PEM of the CA to trust for an https server.
        #[arg(long)]
        server_ca: Option<PathBuf>,
        /// The user the service runs as (the unit's `User=`): run as root,
        /// provisioning gives it the directory and files. Default
        /// `facegate` when that user exists; `""` keeps root's ownership.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Run the kiosk service (under systemd: Type=notify, watchdog, journald).
    Run {
        /// The daemon configuration (TOML).
        #[arg(long, default_value = "/etc/facegate/daemon.toml")]
        config: PathBuf,
    },
    /// Run the full pipeline over a video file or a directory of frames as fast as possible, then exit.
    Replay {
        /// The gallery database directory.
        #[arg(long)]
        db: PathBuf,
        /// A video file or a directory of frames.
        source: PathBuf,
        /// Print one JSON line per decision.
        #[arg(long)]
        json: bool,
        /// A daemon configuration to take the other settings from.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The device key file (default DB/device.key, created if absent).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Frame rate of a directory of frames.
        #[arg(long, default_value_t = 25.0)]
        fps: f64,
        /// Take only this many frames per second of the directory's
        /// recording, as a slower camera would (timestamps stay recorded).
        #[arg(long)]
        sample_fps: Option<f64>,
    },
    /// Check or print the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Find faces in an image; prints JSON (boxes, landmarks, scores).
    Detect {
        image: PathBuf,
        #[command(flatten)]
        models: ModelArgs,
    },
    /// Compare the main faces of two images; prints JSON with the verdict.
    Compare {
        image_a: PathBuf,
        image_b: PathBuf,
        #[command(flatten)]
        models: ModelArgs,
    },
    /// Measure accuracy on labelled photos.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Per-stage latency on real photos at 320x240 and 640x480, and 1:N matching.
    Bench {
        /// Directory of photos to build frames from.
        #[arg(long)]
        photos: Option<PathBuf>,
        /// Passes over the photos per frame size.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Gallery sizes for the matching benchmark.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        gallery_sizes: Vec<usize>,
        /// Also time every model file in onnxruntime (one thread) on the same inputs and print tract/onnxruntime.
        #[arg(long)]
        onnxruntime: bool,
        /// Python interpreter with onnxruntime (default: MODELS/tools/python.sh, which builds a pinned venv).
        #[arg(long)]
        python: Option<PathBuf>,
        #[command(flatten)]
        models: ModelArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Parse and check a configuration file; exit 78 with the reason if it is bad.
    Validate {
        #[arg(long, default_value = "/etc/facegate/daemon.toml")]
        config: PathBuf,
    },
    /// Print the compiled-in default configuration.
    Default,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Verification (1:1) on a list of pairs: FNMR/FMR at the shipped threshold, EER, FNMR at fixed FMRs.
    Pairs {
        /// Directory the CSV paths are relative to.
        #[arg(long)]
        root: PathBuf,
        /// CSV with columns path_a,path_b,same.
        #[arg(long)]
        pairs: PathBuf,
        #[command(flatten)]
        common: EvalArgs,
        /// Also print the measured operating curve as a manifest [thresholds] snippet (stderr).
        #[arg(long)]
        calibration: bool,
        /// Per group, also score every impostor pair among the group's manifest photos (FRVT-style
        /// within-group FMR), not only the pairs in the file.
        #[arg(long)]
        within_group_impostors: bool,
    },
    /// Open-set identification (1:N): rank-1, FNIR and FPIR.
    Identify {
        #[arg(long)]
        root: PathBuf,
        /// CSV with columns path,identity.
        #[arg(long)]
        gallery: PathBuf,
        /// CSV with columns path,identity,enrolled.
        #[arg(long)]
        probes: PathBuf,
        /// Target false-positive identification rate for the gallery-size-aware threshold.
        #[arg(long, default_value_t = 0.01)]
        target_fpir: f64,
        #[command(flatten)]
        common: EvalArgs,
    },
    /// Presentation-attack detection: APCER per attack type and BPCER on a labelled data directory.
    Liveness(eval_liveness::LivenessEvalArgs),
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// CSV with a path column and group columns (default: ROOT/manifest.csv when present).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Report figures per value of this manifest column.
    #[arg(long, default_value = "source")]
    group_by: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Skip the quality gate: every detected face is judged.
    #[arg(long)]
    no_quality_gate: bool,
    #[command(flatten)]
    models: ModelArgs,
}

fn main() -> ExitCode {
    let cli = match facegate_cli::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(status) => return status,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("facegate-daemon: {:#}", failure.error);
            ExitCode::from(failure.status)
        }
    }
}

struct Failure {
    status: u8,
    error: anyhow::Error,
}

fn fail(status: u8) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { status, error }
}

fn models_dir(args: &ModelArgs) -> PathBuf {
    args.models.clone().unwrap_or_else(|| facegate_face::models::default_models_dir(None))
}

/// Photos of `dir` and of its subdirectories (one level).
fn load_photo_dirs(dir: &Path) -> Result<Vec<facegate_face::RgbImage>, Failure> {
    let mut images = bench::load_photos(dir).unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut subdirs: Vec<PathBuf> =
            entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
        subdirs.sort();
        for sub in subdirs {
            images.extend(bench::load_photos(&sub).unwrap_or_default());
        }
    }
    if images.is_empty() {
        return Err(fail(exit::NO_INPUT)(anyhow::anyhow!("no photos found in {}", dir.display())));
    }
    Ok(images)
}

fn load_pipeline(args: &ModelArgs, quality: Option<QualityConfig>) -> Result<FacePipeline, Failure> {
    let dir = models_dir(args);
    let options = PipelineOptions {
        detector_precision: args.detector_precision,
        embedder_precision: args.embedder_precision,
        mirror: args.mirror,
        detector: Some(facegate_face::DetectorOverrides { max_side: args.detector_max_side, ..Default::default() }),
        quality,
        ..PipelineOptions::default()
    };
    FacePipeline::load(&dir, &options)
        .with_context(|| format!("loading models from {}", dir.display()))
        .map_err(fail(exit::UNAVAILABLE))
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string(value).context("encoding JSON").map_err(fail(exit::SOFTWARE))?;
    println!("{text}");
    Ok(())
}

fn inspect_status(error: &inspect::InspectError) -> u8 {
    match error {
        inspect::InspectError::Read { .. } => exit::NO_INPUT,
        inspect::InspectError::Face { source: facegate_face::FaceError::Inference(_), .. } => exit::SOFTWARE,
        inspect::InspectError::Face { .. } => exit::DATA,
        inspect::InspectError::NoThreshold => exit::UNAVAILABLE,
    }
}

fn eval_status(error: &evaluation::EvalError) -> u8 {
    match error {
        evaluation::EvalError::Read { .. } => exit::NO_INPUT,
        evaluation::EvalError::Csv { .. } => exit::DATA,
        evaluation::EvalError::NoThreshold => exit::UNAVAILABLE,
    }
}

fn groups_for(root: &Path, args: &EvalArgs) -> Result<Option<evaluation::Groups>, Failure> {
    let manifest = match &args.manifest {
        Some(path) => path.clone(),
        None => {
            let default = root.join("manifest.csv");
            if !default.exists() {
                return Ok(None);
            }
            default
        }
    };
    evaluation::Groups::read(&manifest, &args.group_by)
        .map(Some)
        .map_err(|e| Failure { status: eval_status(&e), error: e.into() })
}

fn threads(args: &EvalArgs) -> usize {
    args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

fn load_config(path: &Path) -> Result<DaemonConfig, Failure> {
    DaemonConfig::load(path, &ProcessEnvironment).map_err(|e| fail(exit::CONFIG)(e.into()))
}

fn run_status(error: &RunError) -> u8 {
    match error {
        RunError::Kiosk(KioskError::Models(_) | KioskError::NoThreshold(_)) => exit::UNAVAILABLE,
        RunError::Kiosk(KioskError::Liveness(_)) => exit::CONFIG,
        RunError::Kiosk(KioskError::Store(_) | KioskError::StateDir { .. }) => exit::CANT_CREATE,
        RunError::Kiosk(KioskError::Inference(_)) => exit::SOFTWARE,
        RunError::Source(SourceError::Unsupported { .. } | SourceError::Open { .. }) => exit::NO_INPUT,
        RunError::Source(_) => exit::DATA,
        RunError::Sync(_) => exit::CONFIG,
        RunError::Http { .. } | RunError::Runtime(_) => exit::OS_ERROR,
    }
}

fn replay_json(recorded: &Recorded) -> serde_json::Value {
    let r = &recorded.record;
    let t = &r.timings;
    serde_json::json!({
        "decision": r.decision.as_str(),
        "identity": r.identity.as_ref().map(|i| i.as_str()),
        "name": r.name,
        "score": r.score,
        "liveness": r.liveness,
        "liveness_score": r.liveness_score,
        "liveness_reason": r.liveness_code,
        "liveness_cues": r.liveness_cues,
        "reason": r.reason,
        "track": r.track,
        "frames": r.frames,
        "started_at_ms": r.started_at.as_millis() as u64,
        "decided_at_ms": r.decided_at.as_millis() as u64,
        "timings_ms": {
            "detect": t.detect, "align": t.align, "quality": t.quality,
            "liveness": t.liveness, "embed": t.embed, "match": t.matching,
        },
        "audit_seq": recorded.audit_seq,
    })
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Gallery(command) => {
            facegate_daemon::store::cli::run(command).map_err(|e| Failure { status: e.exit_status(), error: e.into() })
        }
        Command::Run { config } => {
            let config = load_config(&config)?;
            service::init_logging(log::LevelFilter::Info);
            let shutdown = Arc::new(AtomicBool::new(false));
            runtime::run(&config, shutdown).map_err(|e| Failure { status: run_status(&e), error: e.into() })
        }
        Command::Replay { db, source, json, config, key, fps, sample_fps } => {
            let mut config = match config {
                Some(path) => load_config(&path)?,
                None => DaemonConfig::parse(config::DEFAULT_CONFIG, "built-in defaults", &ProcessEnvironment)
                    .map_err(|e| fail(exit::CONFIG)(e.into()))?,
            };
            config.source =
                SourceSpec::Replay { path: source, pace: Pace::AsFastAsPossible, fps, repeat: false, sample_fps };
            config.source.check().map_err(|e| fail(exit::USAGE)(anyhow::anyhow!(e)))?;
            config.gallery.db = db;
            if key.is_some() {
                config.gallery.key = key;
            }
            service::init_logging(log::LevelFilter::Warn);
            let summary = runtime::replay(&config, |recorded| {
                if json {
                    println!("{}", replay_json(recorded));
                } else {
                    let r = &recorded.record;
                    println!(
                        "{:>8} ms  track {:>3}  {:<7} {:<20} score {:<6} liveness {:?}  {}",
                        r.decided_at.as_millis(),
                        r.track,
                        r.decision.as_str(),
                        r.identity.as_ref().map_or("-", |i| i.as_str()),
                        r.score.map_or("-".into(), |s| format!("{s:.3}")),
                        r.liveness,
                        r.reason
                    );
                }
            })
            .map_err(|e| Failure { status: run_status(&e), error: e.into() })?;
            eprintln!(
                "replay: {} frames ({} unreadable), {} decisions, {:.1} s, {:.1} frames/s",
                summary.frames,
                summary.unreadable_frames,
                summary.decisions,
                summary.seconds,
                summary.frames_per_second
            );
            Ok(())
        }
        Command::Config(ConfigCommand::Validate { config }) => {
            let parsed = load_config(&config)?;
            println!("{}: ok (device {}, source: {})", config.display(), parsed.device.id, parsed.source.describe());
            Ok(())
        }
        Command::Provision { server, token, dir, server_ca, owner } => {
            use facegate_cli::users::{running_as_root, system_user};
            use facegate_daemon::sync::ProvisionError as P;
            let owner_name = owner.clone().unwrap_or_else(|| "facegate".to_owned());
            let owner_ids = match (running_as_root(), owner_name.as_str(), system_user(&owner_name)) {
                (false, _, _) | (_, "", _) => None,
                (true, _, Some(ids)) => Some(ids),
                // The default user is optional (a development machine);
                // a user named on the command line is not.
                (true, _, None) if owner.is_none() => None,
                (true, name, None) => {
                    return Err(fail(exit::USAGE)(anyhow::anyhow!(
                        "--owner {name}: no such system user (create it, or pass --owner '' to keep root's ownership)"
                    )));
                }
            };
            let provisioned = facegate_daemon::sync::provision(&server, &token, &dir, server_ca.as_deref(), owner_ids)
                .map_err(|e| {
                    let status = match &e {
                        P::AlreadyProvisioned(_) => exit::CANT_CREATE,
                        P::Refused { .. } => exit::NO_PERMISSION,
                        P::Http(_) => exit::UNAVAILABLE,
                        P::Answer(_) => exit::PROTOCOL,
                        P::Io { .. } | P::Csr(_) => exit::IO_ERROR,
                        P::NotProvisioned(_) | P::KeyPermissions { .. } => exit::CONFIG,
                    };
                    Failure { status, error: e.into() }
                })?;
            print_json(&serde_json::json!({
                "device_id": provisioned.device_id,
                "broker": provisioned.mqtt,
                "shards": provisioned.shards,
                "dir": dir,
                "owner": owner_ids.map(|_| owner_name),
                "next": format!(
                    "set [sync] dir = \"{}\" in the daemon configuration (/etc/facegate/daemon.toml), then restart the service (systemctl restart facegate-daemon)",
                    dir.display()
                ),
            }))
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{}", config::DEFAULT_CONFIG);
            Ok(())
        }
        Command::Detect { image, models } => {
            let pipeline = load_pipeline(&models, None)?;
            let report = inspect::detect(&pipeline, &image)
                .map_err(|e| Failure { status: inspect_status(&e), error: e.into() })?;
            print_json(&report)
        }
        Command::Compare { image_a, image_b, models } => {
            let pipeline = load_pipeline(&models, None)?;
            let report = inspect::compare(&pipeline, &image_a, &image_b)
                .map_err(|e| Failure { status: inspect_status(&e), error: e.into() })?;
            print_json(&report)
        }
        Command::Eval(EvalCommand::Pairs { root, pairs, common, calibration, within_group_impostors }) => {
            let quality = common.no_quality_gate.then(QualityConfig::permissive);
            let pipeline = load_pipeline(&common.models, quality)?;
            let groups = groups_for(&root, &common)?;
            let report = evaluation::evaluate_pairs(
                &pipeline,
                &root,
                &pairs,
                groups.as_ref(),
                within_group_impostors,
                threads(&common),
            )
            .map_err(|e| Failure { status: eval_status(&e), error: e.into() })?;
            if calibration {
                eprintln!(
                    "[thresholds] curve measured on {} ({} genuine, {} impostor pairs):",
                    pairs.display(),
                    report.genuine,
                    report.impostor
                );
                for p in &report.curve {
                    eprintln!("  {{ fmr = {:e}, threshold = {}, fnmr = {} }},", p.fmr, p.threshold, p.fnmr);
                }
            }
            if common.json {
                print_json(&report)
            } else {
                print_pairs_text(&report);
                Ok(())
            }
        }
        Command::Eval(EvalCommand::Identify { root, gallery, probes, target_fpir, common }) => {
            let quality = common.no_quality_gate.then(QualityConfig::permissive);
            let pipeline = load_pipeline(&common.models, quality)?;
            let groups = groups_for(&root, &common)?;
            let report = evaluation::evaluate_identify(
                &pipeline,
                &root,
                &gallery,
                &probes,
                groups.as_ref(),
                target_fpir,
                threads(&common),
            )
            .map_err(|e| Failure { status: eval_status(&e), error: e.into() })?;
            if common.json {
                print_json(&report)
            } else {
                println!(
                    "gallery {} identities ({} photos, {} failed); {} probes ({} failed)\nthreshold {:.4}, margin {:.3}: rank-1 {:.4}, FNIR {:.4}, FPIR {:.4}",
                    report.gallery_identities,
                    report.gallery_images,
                    report.gallery_failed,
                    report.probes,
                    report.failed_probes,
                    report.threshold,
                    report.margin,
                    report.rank1,
                    report.fnir,
                    report.fpir
                );
                Ok(())
            }
        }
        Command::Eval(EvalCommand::Liveness(args)) => {
            eval_liveness::run(&args).map_err(|(status, error)| Failure { status, error })
        }
        Command::Bench { photos, rounds, gallery_sizes, onnxruntime, python, models } => {
            let pipeline = load_pipeline(&models, Some(QualityConfig::permissive()))?;
            let models_dir = models_dir(&models);
            let dir = photos.unwrap_or_else(|| models_dir.join("testdata/photos"));
            let images = load_photo_dirs(&dir)?;
            let frames = bench::bench_frames(&pipeline, &images, &[(320, 240), (640, 480)], rounds)
                .map_err(|e| fail(exit::SOFTWARE)(e.into()))?;
            let matching = bench::bench_matching(pipeline.model_id(), pipeline.embedder().dim(), &gallery_sizes, 200);
            let engines = if onnxruntime {
                let python = python.unwrap_or_else(|| models_dir.join("tools/python.sh"));
                bench::compare_engines(&models_dir, &images[0], &python, 50)
                    .map_err(|e| fail(exit::UNAVAILABLE)(e.into()))?
            } else {
                Vec::new()
            };
            print_json(&bench::BenchReport {
                detector: pipeline.detector().id().to_owned(),
                embedder: pipeline.model_id().to_owned(),
                mirror: pipeline.embedder().mirror(),
                images: images.len(),
                frames,
                matching,
                engines,
                cpu: bench::cpu_model(),
            })
        }
    }
}

fn print_pairs_text(report: &evaluation::PairsReport) {
    println!(
        "{} genuine, {} impostor pairs ({} with a failed photo)\nthreshold {:.4}: FNMR {:.4}, FMR {:.5}; EER {:.4} at {:.4}",
        report.genuine,
        report.impostor,
        report.failed,
        report.threshold,
        report.fnmr,
        report.fmr,
        report.eer,
        report.eer_threshold
    );
    for (name, fnmr) in &report.fnmr_at_fmr {
        println!("FNMR at FMR {name}: {fnmr:.4} (threshold {:.4})", report.threshold_at_fmr[name]);
    }
    for (group, g) in &report.groups {
        println!(
            "  {group:>16}: within {:>5} genuine {:>6} impostor  FNMR {:.4}  FMR {:.5} (x{:.1}) | involving {:>6} impostor  FMR {:.5} (x{:.1})",
            g.genuine,
            g.impostor,
            g.fnmr,
            g.fmr,
            g.fmr_ratio.unwrap_or(0.0),
            g.involving.impostor,
            g.involving.fmr,
            g.involving.fmr_ratio.unwrap_or(0.0)
        );
        if let Some(all) = &g.all_impostors {
            println!(
                "  {:>16}  all {:>6} within-group impostor pairs: FMR {:.5} (x{:.1})",
                "",
                all.impostor,
                all.fmr,
                all.fmr_ratio.unwrap_or(0.0)
            );
        }
    }
}
