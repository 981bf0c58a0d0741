//! tract runs the shipped ONNX files exactly as face-api.js runs the original
//! tfjs weights: descriptors of real face chips agree to float precision, for
//! every shipped precision.
#![allow(clippy::unwrap_used)]

mod common;

use facegate_face::manifest::{Manifest, Precision};
use facegate_face::{Embedder, Landmarks, Point};

#[derive(serde::Deserialize)]
struct Golden {
    chip: String,
    descriptor: Vec<f32>,
}

fn goldens() -> Vec<Golden> {
    let text = std::fs::read_to_string(common::testdata("faceapi_descriptors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn embedder_matches_face_api_js_on_real_chips_at_every_precision() {
    let manifest = Manifest::load(&common::models_dir().join("dlib-resnet29.toml")).unwrap();
    let goldens = goldens();
    assert!(goldens.len() >= 5);
    for precision in [Precision::U8w, Precision::F32] {
        let embedder = Embedder::load(&manifest, Some(precision), Some(false)).unwrap();
        for golden in &goldens {
            let chip = image::open(common::testdata(&golden.chip)).unwrap().to_rgb8();
            let ours = embedder.run(&chip).unwrap();
            assert_eq!(ours.len(), 128);
            let worst = ours.iter().zip(&golden.descriptor).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{precision} {}: max abs diff {worst}", golden.chip);
        }
    }
}

#[derive(serde::Deserialize)]
struct ChipRecord {
    chip: String,
    landmarks: Vec<[f32; 2]>,
    photo: String,
}

#[test]
fn rust_alignment_reproduces_the_reference_chips() {
    // The reference chips were cut by OpenCV's warpAffine from the same
    // landmarks; our warp (with its anti-aliasing pre-filter) must give
    // templates that are the same face to the model.
    let text = std::fs::read_to_string(common::testdata("chips.json")).unwrap();
    let records: Vec<ChipRecord> = serde_json::from_str(&text).unwrap();
    let pipeline = common::pipeline();
    let embedder = pipeline.embedder();
    for record in records {
        let image = facegate_face::decode_image(&std::fs::read(common::testdata(&record.photo)).unwrap()).unwrap();
        let landmarks = Landmarks(std::array::from_fn(|i| Point::new(record.landmarks[i][0], record.landmarks[i][1])));
        let ours = embedder.chip(&image, &landmarks).unwrap();
        let reference = image::open(common::testdata(&record.chip)).unwrap().to_rgb8();
        let a = embedder.embed_chips(&ours, None).unwrap();
        let b = embedder.embed_chips(&reference, None).unwrap();
        let similarity = a.similarity(&b).unwrap();
        assert!(similarity > 0.99, "{}: similarity {similarity}", record.chip);
    }
}
