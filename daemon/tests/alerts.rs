//! The shipped kiosk alert rules parse as Prometheus rule groups and use
//! only metrics the daemon exports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/shared/alert_rules.rs"]
mod alert_rules;

use facegate_daemon::metrics;

const RULES: &str = include_str!("../alerts/facegate-daemon.rules.yml");

#[test]
fn kiosk_alert_rules_are_well_formed_prometheus_rule_groups() {
    let rules = alert_rules::well_formed(RULES);
    alert_rules::rule(&rules, "FacegateGalleryStale");
}

#[test]
fn the_stale_gallery_alert_fires_after_a_minute_of_the_gauge_at_1() {
    let rules = alert_rules::well_formed(RULES);
    let rule = alert_rules::rule(&rules, "FacegateGalleryStale");
    assert_eq!(rule["expr"].as_str().unwrap().trim(), format!("{} == 1", metrics::GALLERY_STALE));
    assert_eq!(rule["for"].as_str(), Some("1m"));
}

#[test]
fn kiosk_alert_rules_only_use_exported_metric_names() {
    let exported = [
        metrics::GALLERY_STALE,
        metrics::STALE_DENIALS,
        metrics::AUDIT_WRITE_FAILURES,
        metrics::SOURCE_UP,
        metrics::SYNC_CONNECTED,
        metrics::OUTBOX_DEPTH,
        metrics::DECISIONS,
    ];
    let used = alert_rules::only_exported_metrics(&alert_rules::well_formed(RULES), &exported, "the daemon");
    assert!(used >= 4, "only {used} facegate_* names in the rule expressions");
}
