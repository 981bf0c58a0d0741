//! The daemon configuration: TOML with defaults in code, unknown keys
//! refused, semantic checks after parsing, and `FACEGATE__SECTION__KEY`
//! environment overrides read through [`Environment`] so tests never touch the
//! process environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use facegate_cli::env::{Environment, ProcessEnvironment};
use facegate_face::{Precision, QualityConfig};
use serde::{Deserialize, Serialize};

use crate::liveness::LivenessConfig;
use crate::source::SourceSpec;

/// The compiled-in default configuration, as `config default` prints it.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// Why a configuration was refused (exit status 78).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error(transparent)]
    Environment(#[from] facegate_cli::env::OverrideError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DaemonConfig {
    #[serde(default)]
    pub device: DeviceSection,
    #[serde(default)]
    pub models: ModelsSection,
    pub source: SourceSpec,
    #[serde(default)]
    pub gallery: GallerySection,
    #[serde(default)]
    pub decision: DecisionSection,
    #[serde(default)]
    pub quality: QualityConfig,
    #[serde(default)]
    pub liveness: LivenessConfig,
    #[serde(default)]
    pub actuation: ActuationSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub sync: crate::sync::SyncSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct DeviceSection {
    /// This kiosk's id (in audit events and, with sync, MQTT topics).
    pub id: String,
}

impl Default for DeviceSection {
    fn default() -> Self {
        Self { id: "kiosk".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct ModelsSection {
    /// Directory of model manifests; the installed or built-in one if absent.
    pub dir: Option<PathBuf>,
    pub detector: Option<String>,
    pub embedder: Option<String>,
    pub detector_precision: Option<Precision>,
    pub embedder_precision: Option<Precision>,
    pub mirror: Option<bool>,
    /// Frames are shrunk to this longer side before detection (320 halves a
    /// 640x480 frame: 4x less detection work; faces at a door are large).
    pub detector_max_side: Option<u32>,
    pub detector_score: Option<f32>,
    /// An operator-supplied presentation-attack model: the path of its
    /// manifest (`kind = "liveness"`). None ships; the built-in cues run
    /// either way.
    pub liveness: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct GallerySection {
    /// The sled database directory.
    pub db: PathBuf,
    /// The device key file (32 bytes, mode 0400); `DB/device.key` if absent.
    pub key: Option<PathBuf>,
}

impl Default for GallerySection {
    fn default() -> Self {
        Self { db: PathBuf::from("/var/lib/facegate/db"), key: None }
    }
}

impl GallerySection {
    pub fn key_path(&self) -> PathBuf {
        self.key.clone().unwrap_or_else(|| self.db.join("device.key"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct DecisionSection {
    /// Quality-passing frames of a track combined into its probe template.
    pub frames: usize,
    /// A track not decided this long after it started is decided with what
    /// it has (a track never shown live becomes `spoof`).
    pub window_ms: u64,
    /// A track ends when its face has not been seen for this long.
    pub track_timeout_ms: u64,
    /// After a decision, the same identity is not decided again for this long.
    pub cooldown_ms: u64,
    /// Minimum overlap of consecutive face boxes to be the same walk-up.
    pub track_iou: f32,
    /// 1:N: target false-positive identification rate; the threshold rises
    /// with the gallery size (FPIR ≈ N·FMR). `None`: the shipped threshold.
    pub target_fpir: Option<f64>,
    /// Override of the shipped 1:1 threshold.
    pub threshold: Option<f32>,
    /// Override of the shipped open-set margin over the runner-up.
    pub margin: Option<f32>,
}

impl Default for DecisionSection {
    fn default() -> Self {
        Self {
            frames: 3,
            window_ms: 3000,
            track_timeout_ms: 700,
            cooldown_ms: 5000,
            track_iou: 0.3,
            target_fpir: None,
            threshold: None,
            margin: None,
        }
    }
}

/// Which decisions a sink acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionKind {
    Grant,
    Deny,
    Unknown,
    Spoof,
}

/// One actuation sink (fields in kebab-case like every other key:
/// `pulse-ms`, `active-low`, `timeout-ms`; the snake_case spellings earlier
/// builds took are still read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "kebab-case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Pulses a GPIO line (door strike relay) through the GPIO character device.
    Gpio {
        chip: PathBuf,
        line: u32,
        #[serde(default = "default_pulse_ms", alias = "pulse_ms")]
        pulse_ms: u64,
        #[serde(default, alias = "active_low")]
        active_low: bool,
        #[serde(default = "grant_only")]
        on: Vec<DecisionKind>,
    },
    /// Runs a command (argv, no shell) with the decision in its environment.
    Command {
        argv: Vec<String>,
        #[serde(default = "default_command_timeout_ms", alias = "timeout_ms")]
        timeout_ms: u64,
        #[serde(default = "grant_only")]
        on: Vec<DecisionKind>,
    },
}

fn default_pulse_ms() -> u64 {
    3000
}
fn default_command_timeout_ms() -> u64 {
    2000
}
fn grant_only() -> Vec<DecisionKind> {
    vec![DecisionKind::Grant]
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct ActuationSection {
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct HttpSection {
    /// Loopback address of /health, /ready and /metrics; `None` disables it.
    pub listen: Option<SocketAddr>,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self { listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))) }
    }
}

impl DaemonConfig {
    /// Reads, overrides from the environment, and checks a configuration file.
    pub fn load(path: &Path, env: &dyn Environment) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, &path.display().to_string(), env)
    }

    /// Parses `text` (named `origin` in messages), applies environment
    /// overrides, and checks the result.
    pub fn parse(text: &str, origin: &str, env: &dyn Environment) -> Result<Self, ConfigError> {
        let mut value: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.to_owned(), message: e.to_string() })?;
        facegate_cli::env::apply_overrides(&mut value, env)?;
        let config: DaemonConfig = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse { origin: origin.to_owned(), message: e.to_string() })?;
        config.check().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Checks that serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        facegate_protocol::DeviceId::new(self.device.id.clone()).map_err(|e| format!("device.id: {e}"))?;
        let d = &self.decision;
        if d.frames == 0 || d.frames > 32 {
            return Err(format!("decision.frames must be 1..=32, got {}", d.frames));
        }
        if d.window_ms < 300 {
            return Err(format!("decision.window-ms of {} is too short for liveness (at least 300)", d.window_ms));
        }
        if !(0.0..1.0).contains(&d.track_iou) {
            return Err(format!("decision.track-iou must be in [0, 1), got {}", d.track_iou));
        }
        if let Some(fpir) = d.target_fpir
            && !(fpir > 0.0 && fpir < 1.0)
        {
            return Err(format!("decision.target-fpir must be in (0, 1), got {fpir}"));
        }
        if let Some(t) = d.threshold
            && !(-1.0..=1.0).contains(&t)
        {
            return Err(format!("decision.threshold is a cosine similarity in [-1, 1], got {t}"));
        }
        self.liveness.check().map_err(|e| format!("liveness: {e}"))?;
        self.quality.check().map_err(|e| format!("quality.{e}"))?;
        if let Some(margin) = d.margin
            && !(margin.is_finite() && (0.0..=1.0).contains(&margin))
        {
            return Err(format!("decision.margin is a similarity difference in [0, 1], got {margin}"));
        }
        if self.gallery.db.as_os_str().is_empty() {
            return Err("gallery.db must name a directory".into());
        }
        self.source.check()?;
        if let Some(side) = self.models.detector_max_side
            && !(64..=4096).contains(&side)
        {
            return Err(format!("models.detector-max-side must be 64..=4096, got {side}"));
        }
        for (i, sink) in self.actuation.sinks.iter().enumerate() {
            match sink {
                SinkConfig::Command { argv, timeout_ms, .. } => {
                    if argv.is_empty() || argv[0].is_empty() {
                        return Err(format!("actuation.sinks[{i}]: argv is empty"));
                    }
                    if *timeout_ms == 0 {
                        return Err(format!("actuation.sinks[{i}]: timeout-ms must be positive"));
                    }
                }
                SinkConfig::Gpio { pulse_ms, .. } if *pulse_ms == 0 || *pulse_ms > 60_000 => {
                    return Err(format!("actuation.sinks[{i}]: pulse-ms must be 1..=60000"));
                }
                SinkConfig::Gpio { .. } => {}
            }
        }
        if let Some(listen) = self.http.listen
            && !listen.ip().is_loopback()
        {
            return Err(format!("http.listen {listen} is not a loopback address (metrics are not authenticated)"));
        }
        self.sync.check()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DaemonConfig, ConfigError> {
        DaemonConfig::parse(text, "test.toml", &Vec::new())
    }

    #[test]
    fn the_compiled_in_default_parses_and_checks() {
        let config = parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(config.decision, DecisionSection::default());
        assert!(matches!(config.source, SourceSpec::Camera { .. }));
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = parse("[source]\nkind = \"camera\"\n[decision]\nframe = 3\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(err.to_string().contains("frame"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let err = parse("[source]\nkind = \"camera\"\n[decision]\nframes = 0\n").unwrap_err();
        assert!(err.to_string().contains("decision.frames"), "{err}");
        let err = parse("[source]\nkind = \"camera\"\n[device]\nid = \"a/b\"\n").unwrap_err();
        assert!(err.to_string().contains("device.id"), "{err}");
        let err = parse("[source]\nkind = \"camera\"\n[http]\nlisten = \"0.0.0.0:9464\"\n").unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn the_shipped_sink_examples_parse_when_uncommented() {
        let sinks: String = DEFAULT_CONFIG
            .split("[actuation]\n")
            .nth(1)
            .unwrap()
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
            .collect();
        let config = parse(&format!("[source]\nkind = \"camera\"\n[actuation]\n{sinks}")).unwrap();
        assert!(matches!(
            config.actuation.sinks.as_slice(),
            [SinkConfig::Gpio { pulse_ms: 3000, .. }, SinkConfig::Command { timeout_ms: 2000, .. }]
        ));
        // The snake_case spelling earlier builds took still reads.
        let earlier = parse(
            "[source]\nkind = \"camera\"\n[[actuation.sinks]]\nkind = \"command\"\nargv = [\"x\"]\ntimeout_ms = 5\n",
        )
        .unwrap();
        assert!(matches!(earlier.actuation.sinks.as_slice(), [SinkConfig::Command { timeout_ms: 5, .. }]));
    }

    #[test]
    fn numbers_that_are_not_numbers_and_empty_paths_are_refused_by_key() {
        let camera = "[source]\nkind = \"camera\"\n";
        for (extra, key) in [
            ("[quality]\nmax-yaw = nan\n", "quality.max-yaw"),
            ("[quality]\nmin-eye-distance = -3.0\n", "quality.min-eye-distance"),
            ("[quality]\nmin-brightness = 250.0\nmax-brightness = 10.0\n", "quality.min-brightness"),
            ("[decision]\nmargin = nan\n", "decision.margin"),
            ("[decision]\nmargin = -0.1\n", "decision.margin"),
            ("[gallery]\ndb = \"\"\n", "gallery.db"),
        ] {
            let err = parse(&format!("{camera}{extra}")).unwrap_err();
            assert!(err.to_string().contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn a_replay_sample_rate_is_checked_against_the_recording() {
        let replay =
            |extra: &str| parse(&format!("[source]\nkind = \"replay\"\npath = \"/clips/a\"\nfps = 12.5\n{extra}"));
        let config = replay("sample-fps = 5\n").unwrap();
        assert!(matches!(config.source, SourceSpec::Replay { sample_fps: Some(rate), .. } if rate == 5.0));
        for bad in ["sample-fps = 25\n", "sample-fps = 0\n", "sample-fps = -1\n"] {
            let err = replay(bad).unwrap_err();
            assert!(err.to_string().contains("source.sample-fps"), "{bad}: {err}");
        }
        let err = parse("[source]\nkind = \"replay\"\npath = \"/clips/a\"\nfps = 0\n").unwrap_err();
        assert!(err.to_string().contains("source.fps"), "{err}");
    }

    #[test]
    fn environment_overrides_reach_nested_keys_and_are_checked() {
        let env = vec![
            ("FACEGATE__DECISION__WINDOW_MS".to_owned(), "4500".to_owned()),
            ("FACEGATE__DEVICE__ID".to_owned(), "door-7".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let config = DaemonConfig::parse("[source]\nkind = \"camera\"\n", "t", &env).unwrap();
        assert_eq!(config.decision.window_ms, 4500);
        assert_eq!(config.device.id, "door-7");
        let bad = vec![("FACEGATE__DECISION__FRAMES".to_owned(), "\"many\"".to_owned())];
        assert!(DaemonConfig::parse("[source]\nkind = \"camera\"\n", "t", &bad).is_err());
    }

    #[test]
    fn max_staleness_defaults_to_five_minutes_and_refuses_a_bound_too_tight_for_the_proofs() {
        let config = parse("[source]\nkind = \"camera\"\n").unwrap();
        assert_eq!(config.sync.max_staleness_secs, 300);
        assert_eq!(config.sync.device_config().max_staleness_ms, 300_000);
        let err = parse("[source]\nkind = \"camera\"\n[sync]\nmax-staleness-secs = 5\n").unwrap_err();
        assert!(err.to_string().contains("sync.max-staleness-secs of 5 is too tight"), "{err}");
        let off = parse("[source]\nkind = \"camera\"\n[sync]\nmax-staleness-secs = 0\n").unwrap();
        assert_eq!(off.sync.device_config().max_staleness_ms, 0);
        let ten = parse("[source]\nkind = \"camera\"\n[sync]\nmax-staleness-secs = 10\n").unwrap();
        assert_eq!(ten.sync.device_config().freshness_interval_ms, 2_500);
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let err = DaemonConfig::load(Path::new("/nonexistent/daemon.toml"), &Vec::new()).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}
