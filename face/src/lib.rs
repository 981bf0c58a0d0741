//! The facegate face pipeline, shared by the kiosk daemon and the sync server.
//!
//! Bytes → RGB ([`decode`]) → faces with five landmarks ([`detect`]) → the
//! face to serve ([`pipeline::primary_face`]) → an aligned chip ([`align`]) →
//! the quality gate ([`quality`]) → an L2-normalised template ([`embed`],
//! [`template`]) → 1:N search or 1:1 compare ([`matcher`]), with thresholds
//! calibrated on real faces ([`thresholds`], [`eval`]). Models are described
//! by manifests ([`manifest`]). No camera, no database, no async runtime.
// Only matcher::kernel (runtime-dispatched SIMD) may use `unsafe`.
#![deny(unsafe_code)]

pub mod align;
pub mod decode;
pub mod detect;
pub mod embed;
pub mod error;
pub mod eval;
pub mod geometry;
pub mod liveness;
pub mod manifest;
pub mod matcher;
pub mod models;
mod onnx;
pub mod pipeline;
pub mod quality;
pub mod template;
pub mod thresholds;

pub use decode::{decode_image, rgb_frame};
pub use detect::{Detection, Detector, DetectorConfig, DetectorOverrides, PreparedInput};
pub use embed::Embedder;
pub use error::{DecodeError, FaceError, InferenceError, ModelError};
pub use geometry::{BoundingBox, Landmarks, Point};
pub use image::RgbImage;
pub use manifest::{Manifest, Precision};
pub use matcher::{Gallery, Match};
pub use models::ModelSet;
pub use pipeline::{AssessedFace, FaceAnalysis, FacePipeline, PipelineOptions, StageTimings};
pub use quality::{QualityConfig, QualityIssue, QualityReport};
pub use template::Template;
