//! The daemon's metrics (Prometheus text at `/metrics`). Names live here, in
//! one place; labels have low cardinality (stage, decision, sink).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub const STAGE_LATENCY: &str = "facegate_stage_latency_milliseconds";
pub const DECISIONS: &str = "facegate_decisions";
pub const LIVENESS_REJECTIONS: &str = "facegate_liveness_rejections";
pub const LIVENESS_VERDICTS: &str = "facegate_liveness_verdicts";
pub const CAMERA_FROZEN: &str = "facegate_camera_frozen";
pub const CAMERA_FROZEN_ATTEMPTS: &str = "facegate_camera_frozen_attempts";
pub const FRAMES: &str = "facegate_frames";
pub const FRAMES_DROPPED: &str = "facegate_frames_dropped";
pub const FRAMES_UNREADABLE: &str = "facegate_frames_unreadable";
pub const GALLERY_IDENTITIES: &str = "facegate_gallery_identities";
pub const GALLERY_TEMPLATES: &str = "facegate_gallery_templates";
pub const OUTBOX_DEPTH: &str = "facegate_outbox_depth";
pub const AUDIT_WRITE_FAILURES: &str = "facegate_audit_write_failures";
pub const SOURCE_UP: &str = "facegate_source_up";
pub const SOURCE_RECONNECTS: &str = "facegate_source_reconnects";
pub const SINK_FAILURES: &str = "facegate_sink_failures";
pub const SINK_DROPPED: &str = "facegate_sink_dropped";
pub const SYNC_CONNECTED: &str = "facegate_sync_connected";
pub const SYNC_REJECTED: &str = "facegate_sync_rejected";
pub const GALLERY_STALE: &str = "facegate_gallery_stale";
pub const STALE_DENIALS: &str = "facegate_stale_denials";
pub const SYNC_RESTARTS: &str = "facegate_sync_restarts";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    pub decision: &'static str,
}

/// The liveness cue that decided an attempt (a stable code: "frozen",
/// "face-deformed", "no-live-evidence", ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LivenessLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms … ~1 s.
    Histogram::new(exponential_buckets(0.25, 2.0, 13))
}

/// Every metric the daemon exports, cheap to clone into threads.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub stage_latency: Family<StageLabel, Histogram, fn() -> Histogram>,
    pub decisions: Family<DecisionLabel, Counter>,
    pub liveness_rejections: Counter,
    pub liveness_verdicts: Family<LivenessLabel, Counter>,
    /// 1 while the last decided attempt's frames were frozen (health).
    pub camera_frozen: Gauge,
    pub camera_frozen_attempts: Counter,
    pub frames: Counter,
    pub frames_dropped: Counter,
    pub frames_unreadable: Counter,
    pub gallery_identities: Gauge,
    pub gallery_templates: Gauge,
    pub outbox_depth: Gauge,
    pub audit_write_failures: Counter,
    pub source_up: Gauge,
    pub source_reconnects: Gauge,
    pub sink_failures: Family<SinkLabel, Gauge>,
    pub sink_dropped: Family<SinkLabel, Gauge>,
    pub sync_connected: Gauge,
    pub sync_rejected: Family<ReasonLabel, Counter>,
    pub gallery_stale: Gauge,
    pub stale_denials: Counter,
    pub sync_restarts: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            stage_latency: Family::new_with_constructor(latency_histogram),
            decisions: Family::default(),
            liveness_rejections: Counter::default(),
            liveness_verdicts: Family::default(),
            camera_frozen: Gauge::default(),
            camera_frozen_attempts: Counter::default(),
            frames: Counter::default(),
            frames_dropped: Counter::default(),
            frames_unreadable: Counter::default(),
            gallery_identities: Gauge::default(),
            gallery_templates: Gauge::default(),
            outbox_depth: Gauge::default(),
            audit_write_failures: Counter::default(),
            source_up: Gauge::default(),
            source_reconnects: Gauge::default(),
            sink_failures: Family::default(),
            sink_dropped: Family::default(),
            sync_connected: Gauge::default(),
            sync_rejected: Family::default(),
            gallery_stale: Gauge::default(),
            stale_denials: Counter::default(),
            sync_restarts: Counter::default(),
        };
        registry.register(STAGE_LATENCY, "Time spent per pipeline stage and frame", m.stage_latency.clone());
        registry.register(DECISIONS, "Door decisions by outcome", m.decisions.clone());
        registry.register(
            LIVENESS_REJECTIONS,
            "Attempts refused as presentation attacks",
            m.liveness_rejections.clone(),
        );
        registry.register(
            LIVENESS_VERDICTS,
            "Decided attempts by the liveness cue that decided",
            m.liveness_verdicts.clone(),
        );
        registry.register(
            CAMERA_FROZEN,
            "1 while the last decided attempt showed frozen (identical) frames",
            m.camera_frozen.clone(),
        );
        registry.register(
            CAMERA_FROZEN_ATTEMPTS,
            "Attempts refused because consecutive frames were identical",
            m.camera_frozen_attempts.clone(),
        );
        registry.register(FRAMES, "Frames processed", m.frames.clone());
        registry.register(FRAMES_DROPPED, "Frames dropped because the pipeline was busy", m.frames_dropped.clone());
        registry.register(FRAMES_UNREADABLE, "Frames the source delivered corrupt", m.frames_unreadable.clone());
        registry.register(GALLERY_IDENTITIES, "Identities in the gallery shard", m.gallery_identities.clone());
        registry.register(GALLERY_TEMPLATES, "Templates in the gallery shard", m.gallery_templates.clone());
        registry.register(OUTBOX_DEPTH, "Audit events not yet acknowledged by the server", m.outbox_depth.clone());
        registry.register(
            AUDIT_WRITE_FAILURES,
            "Audit events that could not be written (the door stayed shut)",
            m.audit_write_failures.clone(),
        );
        registry.register(SOURCE_UP, "1 while the frame source delivers frames", m.source_up.clone());
        registry.register(SOURCE_RECONNECTS, "Times the frame source was reopened", m.source_reconnects.clone());
        registry.register(SINK_FAILURES, "Actuations that failed, per sink", m.sink_failures.clone());
        registry.register(SINK_DROPPED, "Actuations dropped because a sink was busy", m.sink_dropped.clone());
        registry.register(SYNC_CONNECTED, "1 while the MQTT sync session is up", m.sync_connected.clone());
        registry.register(SYNC_REJECTED, "Sync messages refused, by reason", m.sync_rejected.clone());
        registry.register(
            GALLERY_STALE,
            "1 while the gallery has had no valid freshness proof within max-staleness-secs",
            m.gallery_stale.clone(),
        );
        registry.register(
            STALE_DENIALS,
            "Would-be grants denied because the gallery was stale",
            m.stale_denials.clone(),
        );
        registry.register(SYNC_RESTARTS, "Times the sync task failed and was restarted", m.sync_restarts.clone());
        m
    }

    pub fn observe_stage(&self, stage: &'static str, ms: f64) {
        self.stage_latency.get_or_create(&StageLabel { stage }).observe(ms);
    }
}

/// The registry as Prometheus text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_their_names_and_labels() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.observe_stage("detect", 7.5);
        m.decisions.get_or_create(&DecisionLabel { decision: "grant" }).inc();
        m.outbox_depth.set(3);
        m.liveness_verdicts.get_or_create(&LivenessLabel { reason: "frozen" }).inc();
        m.camera_frozen.set(1);
        let text = render(&registry);
        assert!(text.contains("facegate_liveness_verdicts_total{reason=\"frozen\"} 1"), "{text}");
        assert!(text.contains("facegate_camera_frozen 1"), "{text}");
        assert!(text.contains("facegate_stage_latency_milliseconds_bucket{le=\"8.0\",stage=\"detect\"} 1"), "{text}");
        assert!(text.contains("facegate_decisions_total{decision=\"grant\"} 1"), "{text}");
        assert!(text.contains("facegate_outbox_depth 3"), "{text}");
    }
}
