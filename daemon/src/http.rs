//! Loopback HTTP: `/health` (the process answers), `/ready` (a latch
//! released once every dependency — models, gallery, camera — has come up,
//! held back while an ongoing condition such as the sync task is down, and
//! 503 while the gallery is stale, with the reason in the body)
//! and `/metrics` (Prometheus text).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::freshness::{Freshness, FreshnessGate};

/// The dependencies readiness waits for, the latch, and the ongoing
/// conditions that hold it back.
#[derive(Debug, Clone)]
pub struct Readiness {
    state: Arc<Mutex<ReadinessState>>,
    /// A stale gallery makes the door not ready (it denies nearly everyone).
    freshness: Option<FreshnessGate>,
}

#[derive(Debug, Default)]
struct ReadinessState {
    dependencies: BTreeMap<&'static str, bool>,
    latched: bool,
    conditions: BTreeMap<&'static str, bool>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::waiting_for(&["models", "gallery", "camera"])
    }
}

impl Readiness {
    pub fn waiting_for(dependencies: &[&'static str]) -> Self {
        let dependencies = dependencies.iter().map(|d| (*d, false)).collect();
        Self {
            state: Arc::new(Mutex::new(ReadinessState { dependencies, ..ReadinessState::default() })),
            freshness: None,
        }
    }

    /// Also reports not ready while `gate` says the gallery is stale.
    pub fn with_freshness(mut self, gate: FreshnessGate) -> Self {
        self.freshness = Some(gate);
        self
    }

    /// Marks `dependency` up (or down); the latch opens when all are up and
    /// then stays open.
    pub fn set(&self, dependency: &'static str, up: bool) {
        if let Ok(mut state) = self.state.lock() {
            state.dependencies.insert(dependency, up);
            if state.dependencies.values().all(|v| *v) {
                state.latched = true;
            }
        }
    }

    /// Marks an ongoing `condition` up or down. Unlike a dependency it is
    /// not latched: readiness is withheld whenever a condition is down,
    /// also after the latch opened (the sync task while it restarts).
    pub fn set_condition(&self, condition: &'static str, up: bool) {
        if let Ok(mut state) = self.state.lock() {
            state.conditions.insert(condition, up);
        }
    }

    /// Whether the service is ready (the latch is open and every condition
    /// up), and the state of each dependency and condition.
    pub fn report(&self) -> (bool, BTreeMap<&'static str, bool>) {
        self.state
            .lock()
            .map(|s| {
                let ready = s.latched && s.conditions.values().all(|v| *v);
                let mut all = s.dependencies.clone();
                all.extend(s.conditions.iter().map(|(k, v)| (*k, *v)));
                (ready, all)
            })
            .unwrap_or_default()
    }
}

#[derive(Clone)]
struct Shared {
    registry: Arc<Registry>,
    readiness: Readiness,
}

pub fn router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/health", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(Shared { registry, readiness })
}

async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    let (open, deps) = shared.readiness.report();
    let freshness = shared.readiness.freshness.as_ref().map_or(Freshness::Fresh, FreshnessGate::check_now);
    let ready = open && !freshness.is_stale();
    let mut body = serde_json::json!({ "ready": ready, "dependencies": deps, "stale": freshness.is_stale() });
    if freshness.is_stale() {
        body["reason"] = serde_json::Value::String(freshness.to_string());
    }
    let body = body.to_string();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        crate::metrics::render(&shared.registry),
    )
}

/// Serves until `shutdown` is set.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: Arc<AtomicBool>,
) {
    let stop = async move {
        while !shutdown.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    if let Err(error) = axum::serve(listener, router(registry, readiness)).with_graceful_shutdown(stop).await {
        log::error!(error:% = error; "HTTP endpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_a_latch_over_every_dependency() {
        let r = Readiness::waiting_for(&["a", "b"]);
        r.set("a", true);
        assert!(!r.report().0);
        r.set("b", true);
        assert!(r.report().0);
        r.set("b", false);
        let (open, deps) = r.report();
        assert!(open, "the latch stays open");
        assert!(!deps["b"]);
    }

    #[test]
    fn a_condition_that_goes_down_withholds_readiness_after_the_latch_opened() {
        let r = Readiness::waiting_for(&["a"]);
        r.set_condition("sync", true);
        r.set("a", true);
        assert!(r.report().0);
        r.set_condition("sync", false);
        let (ready, state) = r.report();
        assert!(!ready, "readiness ignores a condition that is down");
        assert!(!state["sync"]);
        r.set_condition("sync", true);
        assert!(r.report().0);
    }

    #[tokio::test]
    async fn the_endpoints_answer_over_http() {
        let mut registry = Registry::default();
        let metrics = crate::metrics::Metrics::register(&mut registry);
        metrics.frames.inc();
        let readiness = Readiness::waiting_for(&["camera"]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let server = tokio::spawn(serve(listener, Arc::new(registry), readiness.clone(), stop.clone()));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        assert!(get("/health").await.starts_with("HTTP/1.1 200"));
        assert!(get("/ready").await.starts_with("HTTP/1.1 503"));
        readiness.set("camera", true);
        assert!(get("/ready").await.starts_with("HTTP/1.1 200"));
        assert!(get("/metrics").await.contains("facegate_frames_total 1"));
        stop.store(true, Ordering::Relaxed);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_stale_gallery_makes_the_door_not_ready_and_says_why() {
        let gate = FreshnessGate::new(10_000, crate::kiosk::unix_millis());
        let readiness = Readiness::waiting_for(&[]).with_freshness(gate.clone());
        readiness.set("camera", true);
        let app = router(Arc::new(Registry::default()), readiness);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let get = || async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        let stale = get().await;
        assert!(stale.starts_with("HTTP/1.1 503"), "{stale}");
        assert!(stale.contains("gallery stale: no valid freshness proof"), "{stale}");
        gate.set(Some(crate::kiosk::unix_millis() + 60_000));
        let fresh = get().await;
        assert!(fresh.starts_with("HTTP/1.1 200"), "{fresh}");
        assert!(fresh.contains("\"stale\":false"), "{fresh}");
        server.abort();
    }
}
