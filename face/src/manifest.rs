//! Model manifests: one TOML file per model beside its ONNX files.
//!
//! A manifest names the model (`id`, recorded in every template it makes), the
//! pre/post-processing family the pipeline must apply, where the weights came
//! from, the shipped files with their sha256, and the thresholds calibrated on
//! real faces. Loading verifies the file's digest before tract ever parses it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Only manifests of this schema version are understood.
pub const SCHEMA_VERSION: u32 = 1;

/// What a model does in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    Detector,
    Embedder,
    /// Presentation-attack detection: face crop in, "live" probability out.
    Liveness,
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Detector => "detector",
            Self::Embedder => "embedder",
            Self::Liveness => "liveness model",
        })
    }
}

/// The pre/post-processing family; a model is a drop-in when its family is one
/// the pipeline implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFamily {
    /// YuNet: cls/obj/bbox/kps heads at strides 8, 16 and 32.
    Yunet,
    /// dlib-style embedder fed an aligned face chip, one vector out.
    DlibChip,
    /// ArcFace-style embedder (112×112 chip, normalised input), one vector out.
    Arcface,
    /// Liveness model fed a crop around the face box (see [`LivenessSpec`]),
    /// class scores out.
    PadCrop,
}

/// Numeric precision of one shipped file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Float weights, float activations.
    F32,
    /// Weight-only int8: int8 weights dequantized in-graph, float activations.
    Int8w,
    /// Weight-only uint8 with an affine offset (the tfjs quantization, exact).
    U8w,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Int8w => "int8w",
            Self::U8w => "u8w",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Self::F32),
            "int8w" => Ok(Self::Int8w),
            "u8w" => Ok(Self::U8w),
            other => Err(format!("unknown precision {other:?} (expected f32, int8w or u8w)")),
        }
    }
}

/// Pixel channel order the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channels {
    Rgb,
    Bgr,
}

/// Tensor layout of the image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    Nchw,
}

/// The registry package the weights were taken from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub registry: String,
    pub package: String,
    pub version: String,
    pub artifact: String,
    pub artifact_sha256: String,
    pub path: String,
    pub sha256: String,
}

/// One ONNX file of the model at one precision.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub precision: Precision,
    pub file: String,
    pub sha256: String,
    #[serde(default)]
    pub default: bool,
}

/// Input tensor specification.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub layout: Layout,
    pub channels: Channels,
    /// Per-channel value (in input channel order) subtracted from raw 0..255
    /// pixels before scaling; absent means 0.
    pub mean: Option<[f32; 3]>,
    /// Raw 0..255 pixel values (less `mean`) are multiplied by this before
    /// entering the graph.
    pub scale: f32,
    /// Detector: input height and width must be multiples of this.
    pub size_multiple: Option<u32>,
    /// Embedder: chip width.
    pub width: Option<u32>,
    /// Embedder: chip height.
    pub height: Option<u32>,
}

/// How an embedder's face chip is cut from the landmarks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlignmentSpec {
    /// Informational: the chip padding the reference points correspond to.
    pub padding: f32,
    /// Where the five landmarks (eye, eye, nose tip, mouth corner, mouth
    /// corner; image-left first) land in the chip, in pixels.
    pub reference: [[f32; 2]; 5],
}

/// Output tensor specification of an embedder.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub dim: usize,
}

/// How a liveness model's input is cut and its output read.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LivenessSpec {
    /// The crop is centred on the face box; its height is this many times the
    /// box's longer side, its width follows the input's aspect ratio. Parts
    /// outside the frame are black.
    pub crop_scale: f32,
    /// Index, in the flattened output, of the "live" class.
    pub live_index: usize,
    /// What turns the output into a probability.
    pub activation: Activation,
}

/// The last step from raw model output to a probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// Softmax over the whole output; the live class's share.
    Softmax,
    /// Logistic function of the live output alone.
    Sigmoid,
    /// The live output is already a probability.
    None,
}

/// One point of the calibrated operating curve: the similarity threshold that
/// gave `fmr` on the calibration set.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperatingPoint {
    pub fmr: f64,
    pub threshold: f32,
    /// FNMR measured at that threshold on the same set.
    pub fnmr: f64,
}

/// Thresholds: detector score and NMS, or the embedder's calibrated similarity
/// thresholds (cosine similarity of L2-normalised templates; higher = more alike).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Detector: minimum face score.
    pub score: Option<f32>,
    /// Detector: IoU above which overlapping boxes are suppressed.
    pub nms_iou: Option<f32>,
    /// Embedder: the shipped 1:1 decision threshold.
    #[serde(rename = "match")]
    pub match_threshold: Option<f32>,
    /// Embedder: the FMR the shipped threshold was calibrated for.
    pub match_fmr: Option<f64>,
    /// Embedder: 1:N only — the best identity must beat the runner-up by at
    /// least this much, or the search is ambiguous and nobody is identified.
    pub margin: Option<f32>,
    /// Embedder: similarity above which enrollment reports a duplicate.
    pub dedup: Option<f32>,
    /// Embedder: whether templates average the chip and its mirror image.
    pub mirror: Option<bool>,
    /// Embedder: the calibration set the curve was measured on.
    pub calibration: Option<String>,
    /// Embedder: the calibrated operating curve, FMR descending.
    #[serde(default)]
    pub curve: Vec<OperatingPoint>,
}

/// A parsed, checked model manifest.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    pub id: String,
    pub kind: ModelKind,
    pub family: ModelFamily,
    pub license: String,
    pub license_file: Option<String>,
    pub source: Source,
    pub files: Vec<ModelFile>,
    pub input: InputSpec,
    pub alignment: Option<AlignmentSpec>,
    pub output: Option<OutputSpec>,
    /// Liveness models: crop and output reading.
    pub liveness: Option<LivenessSpec>,
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Directory the manifest was read from; file names resolve against it.
    #[serde(skip)]
    pub dir: PathBuf,
    /// The manifest file itself (for error messages).
    #[serde(skip)]
    pub path: PathBuf,
}

impl Manifest {
    /// Reads and checks a manifest file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })?;
        let mut manifest: Manifest = toml::from_str(&text)
            .map_err(|source| ModelError::Parse { path: path.to_path_buf(), message: source.to_string() })?;
        manifest.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        manifest.path = path.to_path_buf();
        manifest.check().map_err(|message| ModelError::Invalid { path: path.to_path_buf(), message })?;
        Ok(manifest)
    }

    /// Semantic checks that serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        if self.schema != SCHEMA_VERSION {
            return Err(format!("schema {} is not supported (this build reads schema {SCHEMA_VERSION})", self.schema));
        }
        if self.id.trim().is_empty() {
            return Err("id is empty".into());
        }
        if self.files.is_empty() {
            return Err("no [[files]] listed".into());
        }
        if self.files.iter().filter(|f| f.default).count() > 1 {
            return Err("more than one file is marked default".into());
        }
        for file in &self.files {
            if !is_sha256_hex(&file.sha256) {
                return Err(format!("file {}: sha256 is not 64 hex digits", file.file));
            }
        }
        if !(self.input.scale.is_finite() && self.input.scale > 0.0) {
            return Err("input.scale must be a positive number".into());
        }
        match (self.kind, self.family) {
            (ModelKind::Detector, ModelFamily::Yunet) => {
                let multiple = self.input.size_multiple.unwrap_or(0);
                if multiple == 0 {
                    return Err("a YuNet detector needs input.size_multiple".into());
                }
            }
            (ModelKind::Embedder, ModelFamily::DlibChip | ModelFamily::Arcface) => {
                if self.input.width.unwrap_or(0) == 0 || self.input.height.unwrap_or(0) == 0 {
                    return Err("an embedder needs input.width and input.height".into());
                }
                if self.alignment.is_none() {
                    return Err("an embedder needs an [alignment] section".into());
                }
                match &self.output {
                    Some(output) if output.dim > 0 => {}
                    _ => return Err("an embedder needs [output] with dim > 0".into()),
                }
                let mut last = f64::INFINITY;
                for point in &self.thresholds.curve {
                    if !(point.fmr > 0.0 && point.fmr < last) {
                        return Err("thresholds.curve must list FMR strictly descending, > 0".into());
                    }
                    last = point.fmr;
                }
            }
            (ModelKind::Liveness, ModelFamily::PadCrop) => {
                if self.input.width.unwrap_or(0) == 0 || self.input.height.unwrap_or(0) == 0 {
                    return Err("a liveness model needs input.width and input.height".into());
                }
                let Some(spec) = &self.liveness else {
                    return Err("a liveness model needs a [liveness] section".into());
                };
                if !(spec.crop_scale.is_finite() && spec.crop_scale > 0.0) {
                    return Err("liveness.crop_scale must be a positive number".into());
                }
                match &self.output {
                    Some(output) if output.dim > spec.live_index => {}
                    _ => return Err("a liveness model needs [output] with dim > liveness.live_index".into()),
                }
            }
            (kind, family) => {
                return Err(format!("family {family:?} cannot be used as a {kind}"));
            }
        }
        Ok(())
    }

    /// The file of the requested precision, or the default one.
    pub fn file(&self, precision: Option<Precision>) -> Result<&ModelFile, ModelError> {
        let found = match precision {
            Some(p) => self.files.iter().find(|f| f.precision == p),
            None => self.files.iter().find(|f| f.default).or_else(|| self.files.first()),
        };
        found.ok_or_else(|| ModelError::NoSuchPrecision {
            model: self.id.clone(),
            precision: precision.map(|p| p.to_string()).unwrap_or_default(),
        })
    }

    /// Reads the ONNX bytes of `file` and verifies their sha256.
    pub fn read_verified(&self, file: &ModelFile) -> Result<Vec<u8>, ModelError> {
        let path = self.dir.join(&file.file);
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Read { path: path.clone(), source })?;
        let actual = sha256_hex(&bytes);
        if !actual.eq_ignore_ascii_case(&file.sha256) {
            return Err(ModelError::Checksum { path, expected: file.sha256.clone(), actual });
        }
        Ok(bytes)
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DETECTOR: &str = r#"
schema = 1
id = "yunet-test"
kind = "detector"
family = "yunet"
license = "MIT"
[source]
registry = "pypi"
package = "p"
version = "1"
artifact = "a.whl"
artifact_sha256 = "00"
path = "m.onnx"
sha256 = "00"
[[files]]
precision = "int8w"
file = "m.onnx"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
default = true
[input]
name = "input"
layout = "nchw"
channels = "bgr"
scale = 1.0
size_multiple = 32
[thresholds]
score = 0.6
nms_iou = 0.3
"#;

    #[test]
    fn detector_manifest_parses_and_checks() {
        let m: Manifest = toml::from_str(DETECTOR).unwrap();
        m.check().unwrap();
        assert_eq!(m.file(None).unwrap().precision, Precision::Int8w);
        assert!(m.file(Some(Precision::F32)).is_err());
    }

    #[test]
    fn unknown_manifest_key_is_rejected() {
        let text = DETECTOR.replace("license = \"MIT\"", "license = \"MIT\"\ncolour = 1");
        let err = toml::from_str::<Manifest>(&text).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn detector_without_size_multiple_is_invalid() {
        let text = DETECTOR.replace("size_multiple = 32\n", "");
        let m: Manifest = toml::from_str(&text).unwrap();
        assert!(m.check().unwrap_err().contains("size_multiple"));
    }

    #[test]
    fn wrong_digest_is_refused() {
        let dir = std::env::temp_dir().join(format!("fg-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m.onnx"), b"not the model").unwrap();
        let mut m: Manifest = toml::from_str(DETECTOR).unwrap();
        m.dir = dir.clone();
        let file = m.file(None).unwrap().clone();
        match m.read_verified(&file) {
            Err(ModelError::Checksum { .. }) => {}
            other => panic!("expected a checksum error, got {other:?}"),
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
