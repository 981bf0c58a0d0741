//! Error types of the face pipeline, one enum per layer.

use std::path::PathBuf;

use crate::quality::QualityIssue;

/// An image could not be turned into pixels.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("unrecognised image format (expected JPEG, PNG or PGM/PPM)")]
    UnknownFormat,
    #[error("the {format} image is corrupt or truncated: {message}")]
    Corrupt { format: &'static str, message: String },
    #[error("the image is {width}x{height}; images larger than {max}x{max} are refused")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error("the image is {width}x{height}; at least {min}x{min} pixels are needed")]
    TooSmall { width: u32, height: u32, min: u32 },
    #[error("raw frame of {width}x{height} needs {expected} bytes, got {actual}")]
    FrameSize { width: u32, height: u32, expected: usize, actual: usize },
}

/// A model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid manifest: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("model {model} has no file of precision {precision:?}")]
    NoSuchPrecision { model: String, precision: String },
    #[error("{path} does not match its manifest: sha256 {actual}, expected {expected}")]
    Checksum { path: PathBuf, expected: String, actual: String },
    #[error("model {model} is a {found}, a {expected} was expected")]
    WrongKind { model: String, expected: crate::manifest::ModelKind, found: crate::manifest::ModelKind },
    #[error("tract cannot load model {model}: {message}")]
    Tract { model: String, message: String },
    #[error("no model manifests found under {dir} (looked for {wanted})")]
    NotFound { dir: PathBuf, wanted: String },
}

/// Running a loaded model failed; a bug or a broken model, not bad user input.
#[derive(Debug, thiserror::Error)]
#[error("inference with model {model} failed: {message}")]
pub struct InferenceError {
    pub model: String,
    pub message: String,
}

/// Why a photo or frame did not yield a template.
#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("no face found")]
    NoFace,
    #[error("{count} faces found where exactly one is required")]
    SeveralFaces { count: usize },
    #[error("the face is not usable: {}", QualityIssue::list(.0))]
    Quality(Vec<QualityIssue>),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("templates of model {left} and {right} cannot be compared")]
    ModelMismatch { left: String, right: String },
    #[error("template has {actual} dimensions, model {model} makes {expected}")]
    Dimension { model: String, expected: usize, actual: usize },
}

impl FaceError {
    /// A short stable code for APIs and audit records.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Decode(_) => "unreadable-image",
            Self::NoFace => "no-face",
            Self::SeveralFaces { .. } => "several-faces",
            Self::Quality(issues) => issues.first().map_or("poor-quality", |i| i.code()),
            Self::Inference(_) => "inference-failed",
            Self::ModelMismatch { .. } => "model-mismatch",
            Self::Dimension { .. } => "wrong-dimension",
        }
    }
}
