//! Shared helpers for the face crate's integration tests: the committed
//! models and fixture photos (see models/testdata/SOURCES.md).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::OnceLock;

use facegate_face::{FacePipeline, PipelineOptions, RgbImage};

pub fn models_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"))
}

pub fn testdata(path: &str) -> PathBuf {
    models_dir().join("testdata").join(path)
}

pub fn photo(name: &str) -> RgbImage {
    let bytes = std::fs::read(testdata(&format!("photos/{name}"))).unwrap();
    facegate_face::decode_image(&bytes).unwrap()
}

/// One pipeline per test binary (loading plans the models).
pub fn pipeline() -> &'static FacePipeline {
    static PIPELINE: OnceLock<FacePipeline> = OnceLock::new();
    PIPELINE.get_or_init(|| FacePipeline::load(&models_dir(), &PipelineOptions::default()).unwrap())
}
