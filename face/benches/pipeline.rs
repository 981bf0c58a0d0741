//! Guards the per-frame cost of the face pipeline: detection at kiosk frame
//! sizes, alignment, and embedding, at every shipped precision.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use facegate_face::manifest::{Manifest, Precision};
use facegate_face::{Detector, Embedder, RgbImage};
use image::imageops::{self, FilterType};

fn models() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
}

/// A real photo fitted into a kiosk-sized frame.
fn frame(width: u32, height: u32) -> RgbImage {
    let bytes = std::fs::read(models().join("testdata/photos/face_recognition/obama2.jpg")).unwrap();
    let photo = facegate_face::decode_image(&bytes).unwrap();
    let scale = (width as f32 / photo.width() as f32).min(height as f32 / photo.height() as f32);
    let (w, h) = ((photo.width() as f32 * scale) as u32, (photo.height() as f32 * scale) as u32);
    let resized = imageops::resize(&photo, w, h, FilterType::Triangle);
    let mut out = RgbImage::from_pixel(width, height, image::Rgb([96, 96, 96]));
    imageops::overlay(&mut out, &resized, i64::from((width - w) / 2), i64::from((height - h) / 2));
    out
}

fn detection(c: &mut Criterion) {
    let manifest = Manifest::load(&models().join("yunet-2023mar.toml")).unwrap();
    let mut group = c.benchmark_group("detect");
    for precision in [Precision::Int8w, Precision::F32] {
        let detector = Detector::load(&manifest, Some(precision), None).unwrap();
        for (w, h) in [(320, 240), (640, 480)] {
            let image = frame(w, h);
            assert_eq!(detector.detect(&image).unwrap().len(), 1);
            group.bench_function(format!("{precision}/{w}x{h}"), |b| b.iter(|| detector.detect(&image).unwrap()));
        }
    }
    group.finish();
}

fn alignment_and_embedding(c: &mut Criterion) {
    let detector_manifest = Manifest::load(&models().join("yunet-2023mar.toml")).unwrap();
    let detector = Detector::load(&detector_manifest, None, None).unwrap();
    let manifest = Manifest::load(&models().join("dlib-resnet29.toml")).unwrap();
    let image = frame(640, 480);
    let face = detector.detect(&image).unwrap()[0];
    let embedder = Embedder::load(&manifest, None, Some(false)).unwrap();
    c.bench_function("align/150x150", |b| b.iter(|| embedder.chip(&image, &face.landmarks).unwrap()));
    let chip = embedder.chip(&image, &face.landmarks).unwrap();
    let mut group = c.benchmark_group("embed");
    for precision in [Precision::U8w, Precision::F32] {
        let embedder = Embedder::load(&manifest, Some(precision), Some(false)).unwrap();
        group.bench_function(format!("{precision}"), |b| b.iter(|| embedder.embed_chips(&chip, None).unwrap()));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = detection, alignment_and_embedding
}
criterion_main!(benches);
