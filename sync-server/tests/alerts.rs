//! The shipped Prometheus alert rules parse and use only metrics the server exports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/shared/alert_rules.rs"]
mod alert_rules;

use facegate_sync_server::metrics;

const RULES: &str = include_str!("../alerts/facegate-sync-server.rules.yml");

#[test]
fn alert_rules_are_well_formed_prometheus_rule_groups() {
    let rules = alert_rules::well_formed(RULES);
    for wanted in
        ["FacegateSyncServerDown", "FacegateHighErrorRate", "FacegateHighLatency", "FacegateMongoPoolExhausted"]
    {
        alert_rules::rule(&rules, wanted);
    }
}

#[test]
fn alert_rules_only_use_exported_metric_names() {
    let exported = [
        metrics::HTTP_REQUEST_DURATION,
        metrics::ENROLLMENTS,
        metrics::DUPLICATES_REFUSED,
        metrics::PHOTOS,
        metrics::INDEX_TEMPLATES,
        metrics::INDEX_IDENTITIES,
        metrics::INDEX_APPLIED_SEQ,
        metrics::INDEX_REBUILD_SECONDS,
        metrics::MONGODB_POOL_IN_USE,
        metrics::MONGODB_POOL_MAX,
        metrics::MONGODB_CHECKOUT_FAILURES,
        metrics::LOGIN_FAILURES,
        metrics::READY,
        metrics::SYNC_EVENTS,
    ];
    let used = alert_rules::only_exported_metrics(&alert_rules::well_formed(RULES), &exported, "the server");
    assert!(used >= 8, "only {used} facegate_* names in the rule expressions");
}
