//! The embedder: face chip in, L2-normalised template out.

use image::RgbImage;
use tract_onnx::prelude::Tensor;

use crate::align::ChipGeometry;
use crate::error::{InferenceError, ModelError};
use crate::geometry::Landmarks;
use crate::manifest::{Channels, Manifest, ModelKind, Precision};
use crate::onnx::{self, Plan};
use crate::template::Template;

/// A loaded embedding model.
pub struct Embedder {
    id: String,
    plan: Plan,
    geometry: ChipGeometry,
    dim: usize,
    channels: Channels,
    mean: [f32; 3],
    pixel_scale: f32,
    mirror: bool,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("id", &self.id)
            .field("dim", &self.dim)
            .field("mirror", &self.mirror)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the embedder described by `manifest`, verifying the file digest.
    /// `mirror` overrides the manifest's choice of mirror-averaged templates.
    pub fn load(manifest: &Manifest, precision: Option<Precision>, mirror: Option<bool>) -> Result<Self, ModelError> {
        if manifest.kind != ModelKind::Embedder {
            return Err(ModelError::WrongKind {
                model: manifest.id.clone(),
                expected: ModelKind::Embedder,
                found: manifest.kind,
            });
        }
        let invalid = |message: &str| ModelError::Invalid { path: manifest.path.clone(), message: message.to_owned() };
        let (Some(width), Some(height)) = (manifest.input.width, manifest.input.height) else {
            return Err(invalid("embedder input has no width/height"));
        };
        let alignment = manifest.alignment.as_ref().ok_or_else(|| invalid("no [alignment]"))?;
        let dim = manifest.output.as_ref().map(|o| o.dim).ok_or_else(|| invalid("no [output]"))?;
        let file = manifest.file(precision)?;
        let bytes = manifest.read_verified(file)?;
        let graph = onnx::parse(&manifest.id, &bytes)?;
        let plan = onnx::plan(&manifest.id, graph, &[1, 3, height as usize, width as usize])?;
        let embedder = Self {
            id: manifest.id.clone(),
            plan,
            geometry: ChipGeometry::new(width, height, alignment.reference),
            dim,
            channels: manifest.input.channels,
            mean: manifest.input.mean.unwrap_or([0.0; 3]),
            pixel_scale: manifest.input.scale,
            mirror: mirror.or(manifest.thresholds.mirror).unwrap_or(false),
        };
        // Fail at load, not at the first face, when the output is not `dim` wide.
        let probe = RgbImage::new(width, height);
        let out = embedder.run(&probe).map_err(|e| invalid(&e.message))?;
        if out.len() != dim {
            return Err(invalid(&format!("model outputs {} values, manifest says {dim}", out.len())));
        }
        Ok(embedder)
    }

    /// The model id recorded in every template.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn geometry(&self) -> &ChipGeometry {
        &self.geometry
    }

    /// Whether templates average the chip and its mirror image.
    pub fn mirror(&self) -> bool {
        self.mirror
    }

    /// Cuts the chip for `landmarks`; `None` for degenerate landmarks.
    pub fn chip(&self, image: &RgbImage, landmarks: &Landmarks) -> Option<RgbImage> {
        self.geometry.cut(image, landmarks, false)
    }

    /// The template of an already cut chip (and, when mirroring, of the
    /// mirrored chip cut from the same image and landmarks).
    pub fn embed_chips(&self, chip: &RgbImage, mirrored: Option<&RgbImage>) -> Result<Template, InferenceError> {
        let mut vector = self.run(chip)?;
        if let Some(mirrored) = mirrored {
            let other = self.run(mirrored)?;
            vector.iter_mut().zip(&other).for_each(|(a, b)| *a += b);
        }
        Template::from_embedding(self.id.clone(), vector).ok_or_else(|| InferenceError {
            model: self.id.clone(),
            message: "the embedding is zero or not finite".into(),
        })
    }

    /// Cuts the chip(s) and embeds them. `None` for degenerate landmarks.
    pub fn embed(
        &self,
        image: &RgbImage,
        landmarks: &Landmarks,
    ) -> Result<Option<(RgbImage, Template)>, InferenceError> {
        let Some(chip) = self.chip(image, landmarks) else {
            return Ok(None);
        };
        let mirrored = if self.mirror { self.geometry.cut(image, landmarks, true) } else { None };
        let template = self.embed_chips(&chip, mirrored.as_ref())?;
        Ok(Some((chip, template)))
    }

    /// Raw model output for one chip.
    pub fn run(&self, chip: &RgbImage) -> Result<Vec<f32>, InferenceError> {
        self.infer(&self.input_data(chip))
    }

    /// The input tensor for one chip, NCHW f32 (exposed for benchmarks).
    pub fn input_data(&self, chip: &RgbImage) -> Vec<f32> {
        let (w, h) = (self.geometry.width as usize, self.geometry.height as usize);
        let order: [usize; 3] = match self.channels {
            Channels::Rgb => [0, 1, 2],
            Channels::Bgr => [2, 1, 0],
        };
        let plane = w * h;
        let mut data = vec![0.0f32; 3 * plane];
        for (x, y, p) in chip.enumerate_pixels() {
            let (x, y) = (x as usize, y as usize);
            if x >= w || y >= h {
                continue;
            }
            for (c, &source) in order.iter().enumerate() {
                data[c * plane + y * w + x] = (f32::from(p.0[source]) - self.mean[c]) * self.pixel_scale;
            }
        }
        data
    }

    /// Runs the network on a prepared input (exposed for benchmarks).
    pub fn infer(&self, input: &[f32]) -> Result<Vec<f32>, InferenceError> {
        let (w, h) = (self.geometry.width as usize, self.geometry.height as usize);
        let tensor = Tensor::from_shape(&[1, 3, h, w], input)
            .map_err(|e| InferenceError { model: self.id.clone(), message: format!("{e:#}") })?;
        let outputs = onnx::run(&self.id, &self.plan, tensor)?;
        Ok(onnx::output_slice(&self.id, &outputs, 0)?.to_vec())
    }
}
