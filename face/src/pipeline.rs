//! The face pipeline: detect → choose → align → quality → embed.

use std::path::Path;
use std::time::Instant;

use image::RgbImage;
use serde::Serialize;

use crate::detect::{Detection, Detector, DetectorOverrides};
use crate::embed::Embedder;
use crate::error::{FaceError, InferenceError, ModelError};
use crate::manifest::{Manifest, Precision};
use crate::models::ModelSet;
use crate::quality::{self, QualityConfig, QualityReport};
use crate::template::Template;
use crate::thresholds;

/// How to build a pipeline: which models, at which precision, with which gate.
#[derive(Debug, Clone, Default)]
pub struct PipelineOptions {
    /// Detector manifest id; the only detector in the directory if `None`.
    pub detector_id: Option<String>,
    /// Embedder manifest id; the only embedder in the directory if `None`.
    pub embedder_id: Option<String>,
    pub detector_precision: Option<Precision>,
    pub embedder_precision: Option<Precision>,
    /// Mirror-averaged templates; the manifest's choice if `None`.
    pub mirror: Option<bool>,
    pub detector: Option<DetectorOverrides>,
    pub quality: Option<QualityConfig>,
}

/// Milliseconds spent in each stage for one face.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimings {
    pub detect_ms: f64,
    pub align_ms: f64,
    pub quality_ms: f64,
    pub embed_ms: f64,
}

/// One face taken all the way to a template.
#[derive(Debug, Clone, Serialize)]
pub struct FaceAnalysis {
    pub detection: Detection,
    pub quality: QualityReport,
    pub template: Template,
    pub timings: StageTimings,
}

/// A face that has been cut and measured but not yet embedded.
#[derive(Debug, Clone)]
pub struct AssessedFace {
    pub detection: Detection,
    pub chip: RgbImage,
    pub quality: QualityReport,
}

/// Faces smaller than this fraction of the largest one (by eye distance) are
/// background faces and do not count against "exactly one face".
const COMPETING_FACE_RATIO: f32 = 0.5;

/// Detector + embedder + quality gate, loaded once and shared by threads.
#[derive(Debug)]
pub struct FacePipeline {
    detector: Detector,
    embedder: Embedder,
    embedder_manifest: Manifest,
    quality: QualityConfig,
}

impl FacePipeline {
    /// Loads the models found in `models_dir`.
    pub fn load(models_dir: &Path, options: &PipelineOptions) -> Result<Self, ModelError> {
        let set = ModelSet::discover(models_dir, options.detector_id.as_deref(), options.embedder_id.as_deref())?;
        Self::from_models(&set, options)
    }

    /// Loads the given manifests.
    pub fn from_models(set: &ModelSet, options: &PipelineOptions) -> Result<Self, ModelError> {
        let detector = Detector::load(&set.detector, options.detector_precision, options.detector)?;
        let embedder = Embedder::load(&set.embedder, options.embedder_precision, options.mirror)?;
        Ok(Self {
            detector,
            embedder,
            embedder_manifest: set.embedder.clone(),
            quality: options.quality.unwrap_or_default(),
        })
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The embedder's manifest (thresholds, model id).
    pub fn embedder_manifest(&self) -> &Manifest {
        &self.embedder_manifest
    }

    /// The model id every template of this pipeline carries.
    pub fn model_id(&self) -> &str {
        self.embedder.id()
    }

    pub fn quality_config(&self) -> &QualityConfig {
        &self.quality
    }

    /// The shipped 1:1 threshold (cosine similarity).
    pub fn match_threshold(&self) -> Option<f32> {
        self.embedder_manifest.thresholds.match_threshold
    }

    /// The shipped 1:N rule: the 1:1 threshold and the manifest's margin.
    pub fn open_set_rule(&self) -> Option<thresholds::OpenSetRule> {
        let t = &self.embedder_manifest.thresholds;
        Some(thresholds::OpenSetRule { threshold: t.match_threshold?, margin: t.margin.unwrap_or(0.0) })
    }

    /// The threshold for a 1:N search over `gallery_size` identities holding
    /// `target_fpir`; see [`thresholds::open_set_threshold`].
    pub fn open_set_threshold(&self, target_fpir: f64, gallery_size: usize) -> Option<thresholds::OpenSetThreshold> {
        thresholds::open_set_threshold(&self.embedder_manifest.thresholds.curve, target_fpir, gallery_size)
    }

    /// All faces in the image, best score first.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, InferenceError> {
        self.detector.detect(image)
    }

    /// Cuts the chip and runs the quality gate on one detection. `None` when
    /// the landmarks are degenerate.
    pub fn assess(&self, image: &RgbImage, detection: &Detection) -> Option<AssessedFace> {
        let chip = self.embedder.chip(image, &detection.landmarks)?;
        let quality = quality::assess(&detection.landmarks, &chip, &self.quality);
        Some(AssessedFace { detection: *detection, chip, quality })
    }

    /// The template of an assessed face.
    pub fn embed(&self, image: &RgbImage, face: &AssessedFace) -> Result<Template, InferenceError> {
        let mirrored = if self.embedder.mirror() {
            self.embedder.geometry().cut(image, &face.detection.landmarks, true)
        } else {
            None
        };
        self.embedder.embed_chips(&face.chip, mirrored.as_ref())
    }

    /// For an enrollment photo: exactly one face (background faces much
    /// smaller than the main one are ignored), which must pass the gate.
    pub fn enroll(&self, image: &RgbImage) -> Result<FaceAnalysis, FaceError> {
        let started = Instant::now();
        let faces = self.detect(image)?;
        let detect_ms = ms_since(started);
        let largest = faces.iter().map(|f| f.landmarks.eye_distance()).fold(0.0f32, f32::max);
        let competing = faces.iter().filter(|f| f.landmarks.eye_distance() >= largest * COMPETING_FACE_RATIO).count();
        if competing > 1 {
            return Err(FaceError::SeveralFaces { count: competing });
        }
        let index = primary_face(&faces, image.width(), image.height()).ok_or(FaceError::NoFace)?;
        self.finish(image, &faces[index], detect_ms)
    }

    /// For a probe: the primary face (largest, most central), which must pass
    /// the gate.
    pub fn probe(&self, image: &RgbImage) -> Result<FaceAnalysis, FaceError> {
        let started = Instant::now();
        let faces = self.detect(image)?;
        let detect_ms = ms_since(started);
        let index = primary_face(&faces, image.width(), image.height()).ok_or(FaceError::NoFace)?;
        self.finish(image, &faces[index], detect_ms)
    }

    fn finish(&self, image: &RgbImage, detection: &Detection, detect_ms: f64) -> Result<FaceAnalysis, FaceError> {
        let started = Instant::now();
        let chip = self.embedder.chip(image, &detection.landmarks).ok_or(FaceError::NoFace)?;
        let align_ms = ms_since(started);
        let started = Instant::now();
        let quality = quality::assess(&detection.landmarks, &chip, &self.quality);
        let quality_ms = ms_since(started);
        if !quality.passed() {
            return Err(FaceError::Quality(quality.issues));
        }
        let face = AssessedFace { detection: *detection, chip, quality };
        let started = Instant::now();
        let template = self.embed(image, &face)?;
        let embed_ms = ms_since(started);
        Ok(FaceAnalysis {
            detection: face.detection,
            quality: face.quality,
            template,
            timings: StageTimings { detect_ms, align_ms, quality_ms, embed_ms },
        })
    }
}

/// The face to serve: the largest, preferring faces near the image centre.
pub fn primary_face(faces: &[Detection], width: u32, height: u32) -> Option<usize> {
    let centre_x = width as f32 * 0.5;
    let centre_y = height as f32 * 0.5;
    let half_diagonal = (centre_x.hypot(centre_y)).max(1.0);
    faces
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let c = f.bbox.center();
            let off_centre = (c.x - centre_x).hypot(c.y - centre_y) / half_diagonal;
            (i, f.bbox.area() * (1.0 - 0.5 * off_centre.min(1.0)))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

pub(crate) fn ms_since(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{BoundingBox, Landmarks};

    fn face(x: f32, y: f32, size: f32) -> Detection {
        Detection { bbox: BoundingBox { x, y, width: size, height: size }, landmarks: Landmarks::default(), score: 0.9 }
    }

    #[test]
    fn primary_face_prefers_large_and_central() {
        let faces = [face(0.0, 0.0, 50.0), face(270.0, 190.0, 100.0), face(500.0, 380.0, 110.0)];
        assert_eq!(primary_face(&faces, 640, 480), Some(1));
        assert_eq!(primary_face(&[], 640, 480), None);
    }
}
