//! Prometheus metrics. Every name is a constant here, and the alert rules in
//! `sync-server/alerts/facegate-sync-server.rules.yml` use these names (a
//! test checks that). Counters are exported with the `_total` suffix.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Request latency by route, method and status (histogram).
pub const HTTP_REQUEST_DURATION: &str = "facegate_http_request_duration_seconds";
/// Enrollment attempts by outcome (`enrolled`, `duplicate`, `rejected-photo`, `error`).
pub const ENROLLMENTS: &str = "facegate_enrollments";
/// Enrollments refused because the face is already enrolled.
pub const DUPLICATES_REFUSED: &str = "facegate_duplicates_refused";
/// Photos processed by the face pipeline, by outcome code.
pub const PHOTOS: &str = "facegate_photos";
/// Templates in the master index.
pub const INDEX_TEMPLATES: &str = "facegate_index_templates";
/// Identities in the master index.
pub const INDEX_IDENTITIES: &str = "facegate_index_identities";
/// Change-log position the master index reflects.
pub const INDEX_APPLIED_SEQ: &str = "facegate_index_applied_seq";
/// Seconds the last index rebuild took.
pub const INDEX_REBUILD_SECONDS: &str = "facegate_index_rebuild_seconds";
/// MongoDB connections checked out of the pool.
pub const MONGODB_POOL_IN_USE: &str = "facegate_mongodb_pool_connections_in_use";
/// MongoDB connection pool size limit.
pub const MONGODB_POOL_MAX: &str = "facegate_mongodb_pool_connections_max";
/// Connection check-outs that failed (pool exhausted, server down).
pub const MONGODB_CHECKOUT_FAILURES: &str = "facegate_mongodb_pool_checkout_failures";
/// Failed logins (bad password, unknown user, rate-limited).
pub const LOGIN_FAILURES: &str = "facegate_login_failures";
/// 1 while every readiness dependency is up.
pub const READY: &str = "facegate_ready";
/// Sync service events by `event` (`delta_published`, `publish_failed`,
/// `compaction_failed`, `rejected_*`, …), counted by
/// [`crate::sync::service::SyncStats`].
pub const SYNC_EVENTS: &str = "facegate_sync_events";

/// Label set `[(name, value)]`.
pub type Labels = Vec<(String, String)>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The server's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http: Family<Labels, Histogram, fn() -> Histogram>,
    pub enrollments: Family<Labels, Counter>,
    pub duplicates_refused: Counter,
    pub photos: Family<Labels, Counter>,
    pub index_templates: Gauge,
    pub index_identities: Gauge,
    pub index_applied_seq: Gauge,
    pub index_rebuild_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub pool_in_use: Gauge,
    pub pool_max: Gauge,
    pub checkout_failures: Counter,
    pub login_failures: Family<Labels, Counter>,
    pub ready: Gauge,
    /// The sync service's event counters (registered here, counted there).
    pub sync_events: Arc<crate::sync::service::SyncStats>,
    pool_counter: Arc<AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(HTTP_REQUEST_DURATION, "Admin API request latency by route, method and status", http.clone());
        let enrollments = Family::<Labels, Counter>::default();
        registry.register(ENROLLMENTS, "Enrollment attempts by outcome", enrollments.clone());
        let duplicates_refused = Counter::default();
        registry.register(
            DUPLICATES_REFUSED,
            "Enrollments refused as duplicates of an enrolled face",
            duplicates_refused.clone(),
        );
        let photos = Family::<Labels, Counter>::default();
        registry.register(PHOTOS, "Photos through the face pipeline by outcome", photos.clone());
        let index_templates = Gauge::default();
        registry.register(INDEX_TEMPLATES, "Templates in the master index", index_templates.clone());
        let index_identities = Gauge::default();
        registry.register(INDEX_IDENTITIES, "Identities in the master index", index_identities.clone());
        let index_applied_seq = Gauge::default();
        registry.register(
            INDEX_APPLIED_SEQ,
            "Change-log sequence number the master index reflects",
            index_applied_seq.clone(),
        );
        let index_rebuild_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            INDEX_REBUILD_SECONDS,
            "Duration of the last master index rebuild",
            index_rebuild_seconds.clone(),
        );
        let pool_in_use = Gauge::default();
        registry.register(MONGODB_POOL_IN_USE, "MongoDB connections checked out", pool_in_use.clone());
        let pool_max = Gauge::default();
        registry.register(MONGODB_POOL_MAX, "MongoDB connection pool size limit", pool_max.clone());
        let checkout_failures = Counter::default();
        registry.register(
            MONGODB_CHECKOUT_FAILURES,
            "MongoDB connection check-outs that failed",
            checkout_failures.clone(),
        );
        let login_failures = Family::<Labels, Counter>::default();
        registry.register(LOGIN_FAILURES, "Failed logins by reason", login_failures.clone());
        let ready = Gauge::default();
        registry.register(READY, "1 when every readiness dependency is up", ready.clone());
        let sync_events = Arc::new(crate::sync::service::SyncStats::registered(&mut registry));
        Self {
            registry,
            http,
            enrollments,
            duplicates_refused,
            photos,
            index_templates,
            index_identities,
            index_applied_seq,
            index_rebuild_seconds,
            pool_in_use,
            pool_max,
            checkout_failures,
            login_failures,
            ready,
            sync_events,
            pool_counter: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn enrollment(&self, outcome: &str) {
        self.enrollments.get_or_create(&vec![("outcome".to_string(), outcome.to_string())]).inc();
    }

    pub fn photo(&self, outcome: &str) {
        self.photos.get_or_create(&vec![("outcome".to_string(), outcome.to_string())]).inc();
    }

    pub fn login_failure(&self, reason: &str) {
        self.login_failures.get_or_create(&vec![("reason".to_string(), reason.to_string())]).inc();
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let labels = vec![
            ("route".to_string(), route.to_string()),
            ("method".to_string(), method.to_string()),
            ("status".to_string(), status.to_string()),
        ];
        self.http.get_or_create(&labels).observe(seconds);
    }

    pub fn index_size(&self, templates: usize, identities: usize, applied_seq: i64) {
        self.index_templates.set(templates as i64);
        self.index_identities.set(identities as i64);
        self.index_applied_seq.set(applied_seq);
    }

    /// A MongoDB pool event handler feeding the pool gauges.
    pub fn pool_events(self: &Arc<Self>) -> mongodb::event::EventHandler<mongodb::event::cmap::CmapEvent> {
        use mongodb::event::cmap::CmapEvent;
        let metrics = Arc::clone(self);
        mongodb::event::EventHandler::callback(move |event: CmapEvent| match event {
            CmapEvent::ConnectionCheckedOut(_) => {
                let n = metrics.pool_counter.fetch_add(1, Ordering::AcqRel) + 1;
                metrics.pool_in_use.set(n);
            }
            CmapEvent::ConnectionCheckedIn(_) => {
                let n = (metrics.pool_counter.fetch_sub(1, Ordering::AcqRel) - 1).max(0);
                metrics.pool_in_use.set(n);
            }
            CmapEvent::ConnectionCheckoutFailed(_) => {
                metrics.checkout_failures.inc();
            }
            _ => {}
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exported_under_its_constant_name() {
        let m = Metrics::new();
        m.enrollment("enrolled");
        m.photo("no-face");
        m.login_failure("bad-password");
        m.observe_request("/v1/search", "POST", 200, 0.01);
        m.duplicates_refused.inc();
        let text = m.render();
        for name in [
            HTTP_REQUEST_DURATION,
            INDEX_TEMPLATES,
            INDEX_IDENTITIES,
            INDEX_APPLIED_SEQ,
            INDEX_REBUILD_SECONDS,
            MONGODB_POOL_IN_USE,
            MONGODB_POOL_MAX,
            READY,
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing:\n{text}");
        }
        for counter in [ENROLLMENTS, DUPLICATES_REFUSED, PHOTOS, LOGIN_FAILURES, MONGODB_CHECKOUT_FAILURES] {
            assert!(text.contains(&format!("# TYPE {counter} counter")), "{counter} missing:\n{text}");
        }
        assert!(text.contains("facegate_http_request_duration_seconds_bucket{"), "{text}");
        assert!(text.contains("route=\"/v1/search\""), "{text}");
    }

    #[test]
    fn sync_events_are_one_registered_counter_family_with_help() {
        let m = Metrics::new();
        m.sync_events.count("rejected_unassigned_shard");
        m.sync_events.add("delta_ops_published", 3);
        let text = m.render();
        assert!(text.contains(&format!("# HELP {SYNC_EVENTS} ")), "{text}");
        assert!(text.contains(&format!("# TYPE {SYNC_EVENTS} counter")), "{text}");
        assert_eq!(text.matches(&format!("# TYPE {SYNC_EVENTS} ")).count(), 1, "{text}");
        assert!(text.contains("facegate_sync_events_total{event=\"rejected_unassigned_shard\"} 1"), "{text}");
        assert!(text.contains("facegate_sync_events_total{event=\"delta_ops_published\"} 3"), "{text}");
        // Alerted events exist from the start, at 0.
        assert!(text.contains("facegate_sync_events_total{event=\"publish_failed\"} 0"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        assert_eq!(m.sync_events.snapshot().get("delta_ops_published"), Some(&3));
    }
}
