//! `detect` and `compare`: the pipeline on one or two photos, as JSON.

use std::path::{Path, PathBuf};

use facegate_face::{Detection, FaceError, FacePipeline, RgbImage};
use serde::Serialize;

/// Why a photo could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Face {
        path: PathBuf,
        #[source]
        source: FaceError,
    },
    #[error("the embedder manifest has no shipped match threshold")]
    NoThreshold,
}

/// Reads and decodes a photo.
pub fn load_photo(path: &Path) -> Result<RgbImage, InspectError> {
    let bytes = std::fs::read(path).map_err(|source| InspectError::Read { path: path.to_path_buf(), source })?;
    facegate_face::decode_image(&bytes).map_err(|e| InspectError::Face { path: path.to_path_buf(), source: e.into() })
}

#[derive(Debug, Serialize)]
pub struct DetectReport {
    pub image: String,
    pub width: u32,
    pub height: u32,
    pub detector: String,
    pub faces: Vec<Detection>,
    pub detect_ms: f64,
}

/// `detect IMAGE`.
pub fn detect(pipeline: &FacePipeline, path: &Path) -> Result<DetectReport, InspectError> {
    let image = load_photo(path)?;
    let started = std::time::Instant::now();
    let faces =
        pipeline.detect(&image).map_err(|e| InspectError::Face { path: path.to_path_buf(), source: e.into() })?;
    Ok(DetectReport {
        image: path.display().to_string(),
        width: image.width(),
        height: image.height(),
        detector: pipeline.detector().id().to_owned(),
        faces,
        detect_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

#[derive(Debug, Serialize)]
pub struct CompareReport {
    pub image_a: String,
    pub image_b: String,
    pub model: String,
    /// Cosine similarity of the two templates (higher = more alike).
    pub similarity: f32,
    /// Euclidean distance of the unit templates (dlib's measure).
    pub distance: f32,
    pub threshold: f32,
    pub same_person: bool,
    pub face_a: Detection,
    pub face_b: Detection,
}

/// `compare IMAGE_A IMAGE_B`.
pub fn compare(pipeline: &FacePipeline, a: &Path, b: &Path) -> Result<CompareReport, InspectError> {
    let threshold = pipeline.match_threshold().ok_or(InspectError::NoThreshold)?;
    let analyse = |path: &Path| {
        let image = load_photo(path)?;
        pipeline.probe(&image).map_err(|source| InspectError::Face { path: path.to_path_buf(), source })
    };
    let (fa, fb) = (analyse(a)?, analyse(b)?);
    let similarity =
        fa.template.similarity(&fb.template).map_err(|source| InspectError::Face { path: b.to_path_buf(), source })?;
    Ok(CompareReport {
        image_a: a.display().to_string(),
        image_b: b.display().to_string(),
        model: pipeline.model_id().to_owned(),
        similarity,
        distance: facegate_face::template::similarity_to_distance(similarity),
        threshold,
        same_person: similarity >= threshold,
        face_a: fa.detection,
        face_b: fb.detection,
    })
}
