//! Face detection with a YuNet-family model: letterbox, run, decode, NMS.

use std::sync::Mutex;

use image::RgbImage;
use image::imageops::{self, FilterType};
use tract_onnx::prelude::{InferenceModel, TValue, TVec, Tensor};

use crate::error::{InferenceError, ModelError};
use crate::geometry::{BoundingBox, Landmarks, Point};
use crate::manifest::{Channels, Manifest, ModelFamily, ModelKind, Precision};
use crate::onnx::{self, Plan};

const STRIDES: [usize; 3] = [8, 16, 32];
/// Plans for this many distinct input sizes are kept.
const PLAN_CACHE: usize = 8;

/// One detected face, in the coordinates of the image it was found in.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    pub bbox: BoundingBox,
    pub landmarks: Landmarks,
    pub score: f32,
}

/// An image resized and padded into the detector's input tensor (NCHW f32).
#[derive(Debug, Clone)]
pub struct PreparedInput {
    pub data: Vec<f32>,
    /// Padded network input width and height.
    pub width: usize,
    pub height: usize,
    /// Factor the image was resized by.
    pub scale: f32,
}

/// Detector tuning; defaults come from the manifest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Minimum face score (sqrt(cls · obj)).
    pub score_threshold: f32,
    /// Overlap above which the weaker of two boxes is dropped.
    pub nms_iou: f32,
    /// Images are shrunk so their longer side is at most this before detection.
    pub max_side: u32,
    /// Images are grown so their longer side is at least this (close-ups of a
    /// face that fills the frame are found more reliably with context).
    pub min_side: u32,
    /// At most this many faces are returned, best first.
    pub max_faces: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self { score_threshold: 0.6, nms_iou: 0.3, max_side: 640, min_side: 320, max_faces: 32 }
    }
}

/// Settings that replace the manifest's and the built-in defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DetectorOverrides {
    pub score_threshold: Option<f32>,
    pub max_side: Option<u32>,
    pub min_side: Option<u32>,
}

/// A YuNet detector with a small cache of plans, one per input size.
pub struct Detector {
    id: String,
    graph: InferenceModel,
    size_multiple: u32,
    channels: Channels,
    mean: [f32; 3],
    pixel_scale: f32,
    /// Output positions of cls, obj, bbox and kps for each stride.
    heads: [[usize; 4]; 3],
    config: DetectorConfig,
    plans: Mutex<Vec<((usize, usize), Plan)>>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").field("id", &self.id).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Detector {
    /// Loads the detector described by `manifest`, verifying the file digest.
    /// Thresholds come from the manifest unless `overrides` sets them.
    pub fn load(
        manifest: &Manifest,
        precision: Option<Precision>,
        overrides: Option<DetectorOverrides>,
    ) -> Result<Self, ModelError> {
        if manifest.kind != ModelKind::Detector {
            return Err(ModelError::WrongKind {
                model: manifest.id.clone(),
                expected: ModelKind::Detector,
                found: manifest.kind,
            });
        }
        let invalid = |message: String| ModelError::Invalid { path: manifest.path.clone(), message };
        if manifest.family != ModelFamily::Yunet {
            return Err(invalid(format!("unsupported detector family {:?}", manifest.family)));
        }
        let file = manifest.file(precision)?;
        let bytes = manifest.read_verified(file)?;
        let graph = onnx::parse(&manifest.id, &bytes)?;
        let names = onnx::output_names(&graph);
        let mut heads = [[0usize; 4]; 3];
        for (s, stride) in STRIDES.iter().enumerate() {
            for (h, head) in ["cls", "obj", "bbox", "kps"].iter().enumerate() {
                let wanted = format!("{head}_{stride}");
                heads[s][h] = names
                    .iter()
                    .position(|n| *n == wanted)
                    .ok_or_else(|| invalid(format!("output {wanted} not found (model outputs: {names:?})")))?;
            }
        }
        let mut config = DetectorConfig::default();
        if let Some(score) = manifest.thresholds.score {
            config.score_threshold = score;
        }
        if let Some(iou) = manifest.thresholds.nms_iou {
            config.nms_iou = iou;
        }
        let overrides = overrides.unwrap_or_default();
        config.score_threshold = overrides.score_threshold.unwrap_or(config.score_threshold);
        config.max_side = overrides.max_side.unwrap_or(config.max_side);
        config.min_side = overrides.min_side.unwrap_or(config.min_side);
        Ok(Self {
            id: manifest.id.clone(),
            graph,
            size_multiple: manifest.input.size_multiple.unwrap_or(32).max(32),
            channels: manifest.input.channels,
            mean: manifest.input.mean.unwrap_or([0.0; 3]),
            pixel_scale: manifest.input.scale,
            heads,
            config,
            plans: Mutex::new(Vec::new()),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// Overrides the tuning (thresholds from a daemon config, say).
    pub fn set_config(&mut self, config: DetectorConfig) {
        self.config = config;
    }

    /// Plans the model for frames of `width`×`height` ahead of time, so the
    /// first frame does not pay for optimisation.
    pub fn warm_up(&self, width: u32, height: u32) -> Result<(), ModelError> {
        let (_, padded) = self.input_geometry(width, height);
        self.plan_for(padded).map(|_| ())
    }

    /// Finds faces, best first. An image with no face gives an empty list.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, InferenceError> {
        let input = self.prepare(image);
        let outputs = self.infer(&input)?;
        let (pw, ph) = (input.width, input.height);
        let mut candidates = Vec::new();
        for (s, &stride) in STRIDES.iter().enumerate() {
            let [cls, obj, bbox, kps] = self.heads[s].map(|i| onnx::output_slice(&self.id, &outputs, i));
            let (cls, obj, bbox, kps) = (cls?, obj?, bbox?, kps?);
            let cols = pw / stride;
            let rows = ph / stride;
            let cells = cols * rows;
            if cls.len() < cells || obj.len() < cells || bbox.len() < cells * 4 || kps.len() < cells * 10 {
                return Err(InferenceError {
                    model: self.id.clone(),
                    message: format!("stride {stride}: outputs are shorter than the {cells}-cell grid"),
                });
            }
            decode_level(
                stride as f32,
                cols,
                cells,
                [cls, obj, bbox, kps],
                self.config.score_threshold,
                &mut candidates,
            );
        }
        let mut faces = non_max_suppression(candidates, self.config.nms_iou, self.config.max_faces);
        let inverse = 1.0 / input.scale;
        for face in &mut faces {
            face.bbox = face.bbox.scaled(inverse);
            face.landmarks = face.landmarks.scaled(inverse);
        }
        Ok(faces)
    }

    /// Resizes and pads `image` into the network's input tensor.
    pub fn prepare(&self, image: &RgbImage) -> PreparedInput {
        let (width, height) = image.dimensions();
        let (scale, (pw, ph)) = self.input_geometry(width, height);
        let resized;
        let source = if (scale - 1.0).abs() > f32::EPSILON {
            let factor = (1.0 / scale).round();
            resized = if factor >= 2.0 && (1.0 / scale - factor).abs() < 1e-6 {
                // Integer shrink (a 640x480 camera frame detected at 320): a
                // box filter is exact here and several times cheaper.
                box_downscale(image, factor as u32)
            } else {
                let tw = ((width as f32 * scale).round() as u32).clamp(1, pw as u32);
                let th = ((height as f32 * scale).round() as u32).clamp(1, ph as u32);
                let filter = if scale < 1.0 { FilterType::Triangle } else { FilterType::CatmullRom };
                imageops::resize(image, tw, th, filter)
            };
            &resized
        } else {
            image
        };
        PreparedInput { data: self.to_tensor_data(source, pw, ph), width: pw, height: ph, scale }
    }

    /// Runs the network on a prepared input (exposed for benchmarks).
    pub fn infer(&self, input: &PreparedInput) -> Result<TVec<TValue>, InferenceError> {
        let plan = self
            .plan_for((input.width, input.height))
            .map_err(|e| InferenceError { model: self.id.clone(), message: e.to_string() })?;
        let tensor = Tensor::from_shape(&[1, 3, input.height, input.width], &input.data)
            .map_err(|e| InferenceError { model: self.id.clone(), message: format!("{e:#}") })?;
        onnx::run(&self.id, &plan, tensor)
    }

    /// The resize factor and the padded network input size for an image.
    fn input_geometry(&self, width: u32, height: u32) -> (f32, (usize, usize)) {
        let long = width.max(height).max(1) as f32;
        let scale = if long > self.config.max_side as f32 {
            self.config.max_side as f32 / long
        } else if long < self.config.min_side as f32 {
            self.config.min_side as f32 / long
        } else {
            1.0
        };
        let m = self.size_multiple as usize;
        let round_up = |v: f32| (((v.round() as usize).max(1)).div_ceil(m)) * m;
        (scale, (round_up(width as f32 * scale), round_up(height as f32 * scale)))
    }

    fn to_tensor_data(&self, image: &RgbImage, pw: usize, ph: usize) -> Vec<f32> {
        let plane = pw * ph;
        let order: [usize; 3] = match self.channels {
            Channels::Rgb => [0, 1, 2],
            Channels::Bgr => [2, 1, 0],
        };
        // Padding holds the value a zero pixel becomes, so it looks black.
        let mut data = vec![0.0f32; 3 * plane];
        for (c, &source) in order.iter().enumerate() {
            let pad = -self.mean[c] * self.pixel_scale;
            let channel = &mut data[c * plane..(c + 1) * plane];
            if pad != 0.0 {
                channel.fill(pad);
            }
            for (y, row) in image.rows().take(ph).enumerate() {
                let line = &mut channel[y * pw..(y + 1) * pw];
                for (value, pixel) in line.iter_mut().zip(row) {
                    *value = (f32::from(pixel.0[source]) - self.mean[c]) * self.pixel_scale;
                }
            }
        }
        data
    }

    fn plan_for(&self, size: (usize, usize)) -> Result<Plan, ModelError> {
        let mut plans = self.plans.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(at) = plans.iter().position(|(s, _)| *s == size) {
            let entry = plans.remove(at);
            let plan = entry.1.clone();
            plans.push(entry);
            return Ok(plan);
        }
        let plan = onnx::plan(&self.id, self.graph.clone(), &[1, 3, size.1, size.0])?;
        if plans.len() >= PLAN_CACHE {
            plans.remove(0);
        }
        plans.push((size, plan.clone()));
        Ok(plan)
    }
}

/// Averages `factor`×`factor` blocks (the last partial row/column is dropped).
fn box_downscale(image: &RgbImage, factor: u32) -> RgbImage {
    let (w, h) = (image.width() / factor, image.height() / factor);
    let area = factor * factor;
    let src = image.as_raw();
    let stride = image.width() as usize * 3;
    let mut out = RgbImage::new(w.max(1), h.max(1));
    let mut sums = vec![0u32; w as usize * 3];
    for (y, row) in out.rows_mut().enumerate() {
        sums.fill(0);
        for dy in 0..factor as usize {
            let line = &src[(y * factor as usize + dy) * stride..][..stride];
            for (x, sum) in sums.chunks_exact_mut(3).enumerate() {
                let block = &line[x * factor as usize * 3..][..factor as usize * 3];
                for px in block.chunks_exact(3) {
                    sum[0] += u32::from(px[0]);
                    sum[1] += u32::from(px[1]);
                    sum[2] += u32::from(px[2]);
                }
            }
        }
        for (pixel, sum) in row.zip(sums.chunks_exact(3)) {
            pixel.0 = [0, 1, 2].map(|c| ((sum[c] + area / 2) / area) as u8);
        }
    }
    out
}

/// Decodes one stride level of YuNet's heads into candidate detections.
fn decode_level(
    stride: f32,
    cols: usize,
    cells: usize,
    [cls, obj, bbox, kps]: [&[f32]; 4],
    threshold: f32,
    out: &mut Vec<Detection>,
) {
    for i in 0..cells {
        let score = (cls[i].clamp(0.0, 1.0) * obj[i].clamp(0.0, 1.0)).sqrt();
        if score < threshold || !score.is_finite() {
            continue;
        }
        let col = (i % cols) as f32;
        let row = (i / cols) as f32;
        let b = &bbox[i * 4..i * 4 + 4];
        let cx = (col + b[0]) * stride;
        let cy = (row + b[1]) * stride;
        let w = b[2].clamp(-10.0, 10.0).exp() * stride;
        let h = b[3].clamp(-10.0, 10.0).exp() * stride;
        let k = &kps[i * 10..i * 10 + 10];
        let landmarks =
            Landmarks(std::array::from_fn(|n| Point::new((k[2 * n] + col) * stride, (k[2 * n + 1] + row) * stride)));
        out.push(Detection {
            bbox: BoundingBox { x: cx - w * 0.5, y: cy - h * 0.5, width: w, height: h },
            landmarks,
            score,
        });
    }
}

/// Greedy NMS: best first, dropping boxes that overlap a kept one too much.
pub fn non_max_suppression(mut candidates: Vec<Detection>, iou: f32, max: usize) -> Vec<Detection> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for candidate in candidates {
        if kept.len() >= max {
            break;
        }
        if kept.iter().all(|k| k.bbox.iou(&candidate.bbox) <= iou) {
            kept.push(candidate);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, score: f32) -> Detection {
        Detection { bbox: BoundingBox { x, y: 0.0, width: 10.0, height: 10.0 }, landmarks: Landmarks::default(), score }
    }

    #[test]
    fn box_downscale_averages_blocks() {
        let image = RgbImage::from_fn(5, 4, |x, y| image::Rgb([(x * 10) as u8, (y * 10) as u8, 7]));
        let small = box_downscale(&image, 2);
        assert_eq!(small.dimensions(), (2, 2));
        // Block (0..2, 0..2): x values 0,10 -> 5; y values 0,10 -> 5.
        assert_eq!(small.get_pixel(0, 0).0, [5, 5, 7]);
        assert_eq!(small.get_pixel(1, 1).0, [25, 25, 7]);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let kept = non_max_suppression(vec![det(0.0, 0.7), det(1.0, 0.9), det(50.0, 0.8)], 0.3, 10);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].score, 0.8);
    }

    #[test]
    fn nms_respects_the_face_limit() {
        let many: Vec<_> = (0..10).map(|i| det(i as f32 * 20.0, 0.9)).collect();
        assert_eq!(non_max_suppression(many, 0.3, 3).len(), 3);
    }

    #[test]
    fn decode_level_follows_the_yunet_formulas() {
        // One 2x1 grid at stride 8; cell 1 (col 1, row 0) holds a face.
        let cls = [0.0, 0.81];
        let obj = [0.0, 1.0];
        let bbox = [0.0, 0.0, 0.0, 0.0, 0.5, 0.25, 0.0, 1.0f32.ln()];
        let mut kps = [0.0f32; 20];
        kps[10] = 0.5;
        kps[11] = 1.0;
        let mut out = Vec::new();
        decode_level(8.0, 2, 2, [&cls, &obj, &bbox, &kps], 0.5, &mut out);
        assert_eq!(out.len(), 1);
        let d = out[0];
        assert!((d.score - 0.9).abs() < 1e-6);
        // centre ((1 + 0.5) * 8, (0 + 0.25) * 8) = (12, 2); size (8, 8).
        assert!((d.bbox.x - 8.0).abs() < 1e-5 && (d.bbox.y + 2.0).abs() < 1e-5);
        assert!((d.bbox.width - 8.0).abs() < 1e-5 && (d.bbox.height - 8.0).abs() < 1e-5);
        assert_eq!(d.landmarks.0[0], Point::new(12.0, 8.0));
    }
}
