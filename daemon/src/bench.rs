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
    pub cpu: String,
}

/// Errors of the bench command.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no usable photos in {0}")]
    NoPhotos(PathBuf),
    #[error(transparent)]
    Inference(#[from] facegate_face::InferenceError),
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
