//! `bench`: per-stage latency of the pipeline on real photos at kiosk frame
//! sizes, and of 1:N matching at several gallery sizes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use facegate_face::{FacePipeline, Gallery, RgbImage, Template};
use image::imageops::{self, FilterType};
use serde::Serialize;

/// Median and 95th percentile of a set of timings, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub median_ms: f64,
    pub p95_ms: f64,
    pub samples: usize,
}

impl Latency {
    pub fn of(samples: &mut [f64]) -> Self {
        samples.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let at = ((samples.len() - 1) as f64 * q).round() as usize;
            samples[at]
        };
        Self { median_ms: pick(0.5), p95_ms: pick(0.95), samples: samples.len() }
    }
}

#[derive(Debug, Serialize)]
pub struct FrameBench {
    pub width: u32,
    pub height: u32,
    pub detect: Latency,
    pub align: Latency,
    pub quality: Latency,
    pub embed: Latency,
    /// Frame in, template out (detect + align + quality + embed).
    pub frame_to_template: Latency,
    pub faces_found: usize,
    pub frames: usize,
}

#[derive(Debug, Serialize)]
pub struct MatchBench {
    pub templates: usize,
    pub search_top5: Latency,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub detector: String,
    pub embedder: String,
    pub mirror: bool,
    pub images: usize,
    pub frames: Vec<FrameBench>,
    pub matching: Vec<MatchBench>,
    /// tract vs onnxruntime per model file (with `--onnxruntime`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub engines: Vec<EngineComparison>,
    pub cpu: String,
}

/// Errors of the bench command.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no usable photos in {0}")]
    NoPhotos(PathBuf),
    #[error(transparent)]
    Inference(#[from] facegate_face::InferenceError),
    #[error("{0}")]
    Engine(String),
}

/// Reads every decodable photo of `dir` (sorted by name).
pub fn load_photos(dir: &Path) -> Result<Vec<RgbImage>, BenchError> {
    let read =
        |path: &Path| std::fs::read_dir(path).map_err(|source| BenchError::Read { path: path.to_path_buf(), source });
    let mut paths: Vec<PathBuf> = read(dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    let photos: Vec<RgbImage> = paths
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|bytes| facegate_face::decode_image(&bytes).ok())
        .collect();
    if photos.is_empty() {
        return Err(BenchError::NoPhotos(dir.to_path_buf()));
    }
    Ok(photos)
}

/// Fits `photo` inside a `width`×`height` frame (grey borders), the way a
/// camera frame of that size would hold a face.
pub fn as_frame(photo: &RgbImage, width: u32, height: u32) -> RgbImage {
    let scale = (width as f32 / photo.width() as f32).min(height as f32 / photo.height() as f32);
    let (w, h) = (((photo.width() as f32 * scale) as u32).max(1), ((photo.height() as f32 * scale) as u32).max(1));
    let resized = imageops::resize(photo, w, h, FilterType::Triangle);
    let mut frame = RgbImage::from_pixel(width, height, image::Rgb([96, 96, 96]));
    imageops::overlay(&mut frame, &resized, i64::from((width - w) / 2), i64::from((height - h) / 2));
    frame
}

/// Times each stage on every photo at each frame size, `rounds` times over.
pub fn bench_frames(
    pipeline: &FacePipeline,
    photos: &[RgbImage],
    sizes: &[(u32, u32)],
    rounds: usize,
) -> Result<Vec<FrameBench>, BenchError> {
    let mut out = Vec::new();
    for &(width, height) in sizes {
        let frames: Vec<RgbImage> = photos.iter().map(|p| as_frame(p, width, height)).collect();
        // Warm-up: plans for this size, caches.
        for frame in &frames {
            pipeline.detect(frame)?;
        }
        let (mut detect, mut align, mut quality, mut embed, mut total) = (vec![], vec![], vec![], vec![], vec![]);
        let mut faces_found = 0;
        for _ in 0..rounds.max(1) {
            for frame in &frames {
                let started = Instant::now();
                let faces = pipeline.detect(frame)?;
                detect.push(ms(started));
                let Some(index) = facegate_face::pipeline::primary_face(&faces, width, height) else {
                    continue;
                };
                faces_found += 1;
                let t = Instant::now();
                let Some(chip) = pipeline.embedder().chip(frame, &faces[index].landmarks) else { continue };
                align.push(ms(t));
                let t = Instant::now();
                let report = facegate_face::quality::assess(&faces[index].landmarks, &chip, pipeline.quality_config());
                quality.push(ms(t));
                let t = Instant::now();
                let assessed = facegate_face::AssessedFace { detection: faces[index], chip, quality: report };
                pipeline.embed(frame, &assessed)?;
                embed.push(ms(t));
                total.push(ms(started));
            }
        }
        out.push(FrameBench {
            width,
            height,
            detect: Latency::of(&mut detect),
            align: Latency::of(&mut align),
            quality: Latency::of(&mut quality),
            embed: Latency::of(&mut embed),
            frame_to_template: Latency::of(&mut total),
            faces_found,
            frames: frames.len() * rounds.max(1),
        });
    }
    Ok(out)
}

/// Times top-5 search over galleries of random unit templates.
pub fn bench_matching(model_id: &str, dim: usize, sizes: &[usize], queries: usize) -> Vec<MatchBench> {
    let mut seed = 0x5eed_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut random_template = || {
        Template::from_embedding(model_id, (0..dim).map(|_| next()).collect())
            .unwrap_or_else(|| Template { model_id: model_id.to_owned(), vector: vec![0.0; dim] })
    };
    sizes
        .iter()
        .map(|&n| {
            let mut gallery = Gallery::new(model_id, dim);
            gallery.reserve(n);
            for id in 0..n {
                let _ = gallery.insert(id as u32, &random_template());
            }
            let probes: Vec<Template> = (0..queries).map(|_| random_template()).collect();
            let mut samples: Vec<f64> = probes
                .iter()
                .map(|q| {
                    let t = Instant::now();
                    let _ = gallery.search(q, 5);
                    ms(t)
                })
                .collect();
            MatchBench { templates: n, search_top5: Latency::of(&mut samples) }
        })
        .collect()
}

/// The CPU model, for reports ("unknown" when /proc is not readable).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

/// tract and onnxruntime timed on the same ONNX file with the same input.
#[derive(Debug, Serialize)]
pub struct EngineComparison {
    pub model: String,
    pub input_shape: Vec<usize>,
    pub tract: Latency,
    pub onnxruntime_median_ms: f64,
    pub onnxruntime_p95_ms: f64,
    /// tract median / onnxruntime median (below 1: tract is faster).
    pub ratio: f64,
}

#[derive(Debug, serde::Deserialize)]
struct OrtTiming {
    median_ms: f64,
    p95_ms: f64,
}

/// Runs every shipped file of both models through tract here and through
/// onnxruntime (one thread, `models/tools/ort_bench.py` run by `python`) on
/// the same real input tensors, and reports the ratio.
pub fn compare_engines(
    models_dir: &Path,
    photo: &RgbImage,
    python: &Path,
    iterations: usize,
) -> Result<Vec<EngineComparison>, BenchError> {
    use facegate_face::manifest::Manifest;
    use facegate_face::{Detector, Embedder, ModelSet};

    let set = ModelSet::discover(models_dir, None, None).map_err(|e| BenchError::Engine(e.to_string()))?;
    let scratch = std::env::temp_dir().join(format!("facegate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|source| BenchError::Read { path: scratch.clone(), source })?;
    let mut out = Vec::new();
    let time = |mut f: Box<dyn FnMut() -> Result<(), BenchError> + '_>| -> Result<Latency, BenchError> {
        for _ in 0..5 {
            f()?;
        }
        let mut samples = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let t = Instant::now();
            f()?;
            samples.push(ms(t));
        }
        Ok(Latency::of(&mut samples))
    };
    let file_of = |manifest: &Manifest, precision| manifest.file(Some(precision)).map(|f| manifest.dir.join(&f.file));

    // The detector on real 640x480 and 320x240 frames.
    let face_frame = as_frame(photo, 640, 480);
    for file in &set.detector.files {
        let detector =
            Detector::load(&set.detector, Some(file.precision), None).map_err(|e| BenchError::Engine(e.to_string()))?;
        for (w, h) in [(640, 480), (320, 240)] {
            let input = detector.prepare(&as_frame(photo, w, h));
            let tract = time(Box::new(|| detector.infer(&input).map(|_| ()).map_err(BenchError::from)))?;
            let shape = vec![1, 3, input.height, input.width];
            let path = file_of(&set.detector, file.precision).map_err(|e| BenchError::Engine(e.to_string()))?;
            out.push(run_onnxruntime(python, &path, &shape, &input.data, iterations, &scratch, tract)?);
        }
    }
    // The embedder on a real face chip.
    let landmarks = {
        let detector = Detector::load(&set.detector, None, None).map_err(|e| BenchError::Engine(e.to_string()))?;
        detector
            .detect(&face_frame)?
            .first()
            .map(|f| f.landmarks)
            .ok_or_else(|| BenchError::Engine("no face in the bench photo".into()))?
    };
    for file in &set.embedder.files {
        let embedder = Embedder::load(&set.embedder, Some(file.precision), Some(false))
            .map_err(|e| BenchError::Engine(e.to_string()))?;
        let chip =
            embedder.chip(&face_frame, &landmarks).ok_or_else(|| BenchError::Engine("degenerate landmarks".into()))?;
        let input = embedder.input_data(&chip);
        let tract = time(Box::new(|| embedder.infer(&input).map(|_| ()).map_err(BenchError::from)))?;
        let g = embedder.geometry();
        let shape = vec![1, 3, g.height as usize, g.width as usize];
        let path = file_of(&set.embedder, file.precision).map_err(|e| BenchError::Engine(e.to_string()))?;
        out.push(run_onnxruntime(python, &path, &shape, &input, iterations, &scratch, tract)?);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(out)
}

fn run_onnxruntime(
    python: &Path,
    model: &Path,
    shape: &[usize],
    input: &[f32],
    iterations: usize,
    scratch: &Path,
    tract: Latency,
) -> Result<EngineComparison, BenchError> {
    let input_file = scratch.join("input.f32");
    let bytes: Vec<u8> = input.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&input_file, bytes).map_err(|source| BenchError::Read { path: input_file.clone(), source })?;
    let script = model.parent().unwrap_or(Path::new(".")).join("tools/ort_bench.py");
    let shape_arg = shape.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let output = std::process::Command::new(python)
        .arg(&script)
        .arg("--model")
        .arg(model)
        .args(["--input-shape", &shape_arg])
        .arg("--input-file")
        .arg(&input_file)
        .args(["--iterations", &iterations.to_string()])
        .output()
        .map_err(|e| BenchError::Engine(format!("cannot run {}: {e}", python.display())))?;
    if !output.status.success() {
        return Err(BenchError::Engine(format!(
            "onnxruntime bench failed for {}: {}",
            model.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let timing: OrtTiming = serde_json::from_slice(&output.stdout)
        .map_err(|e| BenchError::Engine(format!("unexpected ort_bench output: {e}")))?;
    Ok(EngineComparison {
        model: model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        input_shape: shape.to_vec(),
        ratio: if timing.median_ms > 0.0 { tract.median_ms / timing.median_ms } else { f64::NAN },
        tract,
        onnxruntime_median_ms: timing.median_ms,
        onnxruntime_p95_ms: timing.p95_ms,
    })
}
