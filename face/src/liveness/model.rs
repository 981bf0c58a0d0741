//! The slot for an operator-supplied passive anti-spoofing model.
//!
//! None ships: no license-clean PAD model exists in the package registries.
//! An operator who licenses one describes it with a manifest (`kind =
//! "liveness"`, `family = "pad-crop"`, a `[liveness]` section saying how the
//! crop is cut and which output is "live") and the kiosk runs it through tract
//! like the detector and the embedder. `models/testdata/liveness/` holds a
//! tiny generated network that proves the slot end to end.

use std::path::Path;

use image::RgbImage;
use tract_onnx::prelude::Tensor;

use crate::error::{InferenceError, ModelError};
use crate::geometry::BoundingBox;
use crate::manifest::{Activation, Channels, Manifest, ModelFamily, ModelKind, Precision};
use crate::onnx::{self, Plan};

/// A loaded liveness model.
pub struct PadModel {
    id: String,
    plan: Plan,
    width: u32,
    height: u32,
    channels: Channels,
    mean: [f32; 3],
    pixel_scale: f32,
    crop_scale: f32,
    live_index: usize,
    dim: usize,
    activation: Activation,
}

impl std::fmt::Debug for PadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PadModel")
            .field("id", &self.id)
            .field("input", &(self.width, self.height))
            .field("crop_scale", &self.crop_scale)
            .finish_non_exhaustive()
    }
}

impl PadModel {
    /// Loads the model `manifest` describes (digest verified, planned once
    /// for its input size) and checks that it gives `output.dim` values.
    pub fn load(manifest: &Manifest, precision: Option<Precision>) -> Result<Self, ModelError> {
        if manifest.kind != ModelKind::Liveness {
            return Err(ModelError::WrongKind {
                model: manifest.id.clone(),
                expected: ModelKind::Liveness,
                found: manifest.kind,
            });
        }
        let invalid = |message: String| ModelError::Invalid { path: manifest.path.clone(), message };
        if manifest.family != ModelFamily::PadCrop {
            return Err(invalid(format!("unsupported liveness family {:?}", manifest.family)));
        }
        manifest.check().map_err(invalid)?;
        let (Some(width), Some(height), Some(spec), Some(output)) =
            (manifest.input.width, manifest.input.height, &manifest.liveness, &manifest.output)
        else {
            return Err(invalid("incomplete liveness manifest".into()));
        };
        let file = manifest.file(precision)?;
        let bytes = manifest.read_verified(file)?;
        let graph = onnx::parse(&manifest.id, &bytes)?;
        let plan = onnx::plan(&manifest.id, graph, &[1, 3, height as usize, width as usize])?;
        let model = Self {
            id: manifest.id.clone(),
            plan,
            width,
            height,
            channels: manifest.input.channels,
            mean: manifest.input.mean.unwrap_or([0.0; 3]),
            pixel_scale: manifest.input.scale,
            crop_scale: spec.crop_scale,
            live_index: spec.live_index,
            dim: output.dim,
            activation: spec.activation,
        };
        let probe = vec![0.0; 3 * width as usize * height as usize];
        let out = model.run(&probe).map_err(|e| invalid(e.message))?;
        if out.len() != output.dim {
            return Err(invalid(format!("model outputs {} values, manifest says {}", out.len(), output.dim)));
        }
        Ok(model)
    }

    /// Reads the manifest at `path` and loads its model.
    pub fn load_path(path: &Path, precision: Option<Precision>) -> Result<Self, ModelError> {
        Self::load(&Manifest::load(path)?, precision)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Input width and height.
    pub fn input_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The probability (0–1) that the face in `bbox` is live.
    pub fn live_probability(&self, frame: &RgbImage, bbox: &BoundingBox) -> Result<f32, InferenceError> {
        let out = self.run(&self.input_data(frame, bbox))?;
        self.probability(&out)
    }

    /// Applies the manifest's activation to raw outputs and picks the live class.
    pub fn probability(&self, outputs: &[f32]) -> Result<f32, InferenceError> {
        let error = |message: String| InferenceError { model: self.id.clone(), message };
        let live = *outputs
            .get(self.live_index)
            .ok_or_else(|| error(format!("output has {} values, live index is {}", outputs.len(), self.live_index)))?;
        let p = match self.activation {
            Activation::None => live,
            Activation::Sigmoid => 1.0 / (1.0 + (-live).exp()),
            Activation::Softmax => {
                let max = outputs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = outputs.iter().map(|v| (v - max).exp()).sum();
                (live - max).exp() / sum
            }
        };
        if p.is_finite() { Ok(p.clamp(0.0, 1.0)) } else { Err(error(format!("live probability is {p}"))) }
    }

    /// The input tensor (NCHW f32) for the face in `bbox`: the crop centred on
    /// the box, `crop_scale` × its longer side high, resampled bilinearly
    /// (box-filtered first when shrinking by 2 or more); black outside the frame.
    pub fn input_data(&self, frame: &RgbImage, bbox: &BoundingBox) -> Vec<f32> {
        let (w, h) = (self.width as usize, self.height as usize);
        let crop_height = bbox.width.max(bbox.height).max(1.0) * self.crop_scale;
        let step = crop_height / h as f32;
        let pixels = sample_rgb(frame, bbox.center().x, bbox.center().y, step, w, h);
        let order: [usize; 3] = match self.channels {
            Channels::Rgb => [0, 1, 2],
            Channels::Bgr => [2, 1, 0],
        };
        let plane = w * h;
        let mut data = vec![0.0f32; 3 * plane];
        for (i, pixel) in pixels.iter().enumerate() {
            for (c, &source) in order.iter().enumerate() {
                data[c * plane + i] = (pixel[source] - self.mean[c]) * self.pixel_scale;
            }
        }
        data
    }

    /// Runs the network on a prepared input; the flattened raw output.
    pub fn run(&self, input: &[f32]) -> Result<Vec<f32>, InferenceError> {
        let shape = [1, 3, self.height as usize, self.width as usize];
        let tensor = Tensor::from_shape(&shape, input)
            .map_err(|e| InferenceError { model: self.id.clone(), message: format!("{e:#}") })?;
        let outputs = onnx::run(&self.id, &self.plan, tensor)?;
        let out = onnx::output_slice(&self.id, &outputs, 0)?.to_vec();
        if out.len() != self.dim {
            return Err(InferenceError {
                model: self.id.clone(),
                message: format!("output has {} values, manifest says {}", out.len(), self.dim),
            });
        }
        Ok(out)
    }
}

/// `width`×`height` RGB samples (0–255, f32) centred on (cx, cy), `step`
/// image pixels apart; black outside the frame.
fn sample_rgb(frame: &RgbImage, cx: f32, cy: f32, step: f32, width: usize, height: usize) -> Vec<[f32; 3]> {
    let factor = step.floor().max(1.0) as i64;
    let (fw, fh) = (i64::from(frame.width()), i64::from(frame.height()));
    // A pixel of the box-filtered frame: the mean of factor×factor pixels
    // (black beyond the frame, as the crop is; only the part inside is read).
    let cell = |bx: i64, by: i64| -> [f32; 3] {
        let mut sum = [0.0f32; 3];
        let (x0, x1) = (bx.saturating_mul(factor).max(0), bx.saturating_add(1).saturating_mul(factor).min(fw));
        let (y0, y1) = (by.saturating_mul(factor).max(0), by.saturating_add(1).saturating_mul(factor).min(fh));
        for y in y0..y1 {
            for x in x0..x1 {
                let p = frame.get_pixel(x as u32, y as u32).0;
                for c in 0..3 {
                    sum[c] += f32::from(p[c]);
                }
            }
        }
        sum.map(|s| s / (factor as f32 * factor as f32))
    };
    let k = 1.0 / factor as f32;
    let shift = (factor as f32 - 1.0) * 0.5;
    let mut out = Vec::with_capacity(width * height);
    for v in 0..height {
        for u in 0..width {
            let x = cx + (u as f32 + 0.5 - width as f32 * 0.5) * step - 0.5;
            let y = cy + (v as f32 + 0.5 - height as f32 * 0.5) * step - 0.5;
            let (sx, sy) = ((x - shift) * k, (y - shift) * k);
            let (x0, y0) = (sx.floor() as i64, sy.floor() as i64);
            let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
            let (x1, y1) = (x0.saturating_add(1), y0.saturating_add(1));
            let (p00, p10, p01, p11) = (cell(x0, y0), cell(x1, y0), cell(x0, y1), cell(x1, y1));
            let mut pixel = [0.0f32; 3];
            for c in 0..3 {
                let upper = p00[c] + (p10[c] - p00[c]) * fx;
                let lower = p01[c] + (p11[c] - p01[c]) * fx;
                pixel[c] = upper + (lower - upper) * fy;
            }
            out.push(pixel);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn unit_step_samples_are_the_pixels_and_outside_is_black() {
        let frame = RgbImage::from_fn(20, 10, |x, y| Rgb([x as u8 * 10, y as u8 * 20, 7]));
        let samples = sample_rgb(&frame, 10.0, 5.0, 1.0, 4, 2);
        // Sample (0, 0) is centred on pixel (8, 4).
        assert_eq!(samples[0], [80.0, 80.0, 7.0]);
        let outside = sample_rgb(&frame, -50.0, -50.0, 1.0, 2, 2);
        assert!(outside.iter().all(|p| *p == [0.0; 3]));
    }
}
