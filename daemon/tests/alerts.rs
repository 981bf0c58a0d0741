//! The shipped kiosk alert rules parse as Prometheus rule groups and use
//! only metrics the daemon exports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use facegate_daemon::metrics;
use yaml_rust2::{Yaml, YamlLoader};

const RULES: &str = include_str!("../alerts/facegate-daemon.rules.yml");

fn rules() -> Vec<Yaml> {
    let docs = YamlLoader::load_from_str(RULES).expect("valid YAML");
    assert_eq!(docs.len(), 1);
    let groups = docs[0]["groups"].as_vec().expect("groups list").clone();
    assert!(!groups.is_empty());
    groups
        .iter()
        .inspect(|g| assert!(g["name"].as_str().is_some_and(|n| !n.is_empty())))
        .flat_map(|g| g["rules"].as_vec().expect("rules list").clone())
        .collect()
}

#[test]
fn kiosk_alert_rules_are_well_formed_prometheus_rule_groups() {
    let mut names = Vec::new();
    for rule in rules() {
        let alert = rule["alert"].as_str().expect("alert name");
        assert!(alert.chars().all(|c| c.is_ascii_alphanumeric()), "{alert}");
        let expr = rule["expr"].as_str().expect("expr").trim();
        assert!(!expr.is_empty(), "{alert}");
        assert_eq!(expr.matches('(').count(), expr.matches(')').count(), "{alert}: unbalanced parentheses");
        let r#for = rule["for"].as_str().expect("for");
        assert!(r#for.ends_with('m') || r#for.ends_with('s'), "{alert}: {for}");
        assert!(matches!(rule["labels"]["severity"].as_str(), Some("critical" | "warning")), "{alert}");
        assert!(rule["annotations"]["summary"].as_str().is_some(), "{alert}");
        if let Yaml::Hash(h) = &rule {
            for key in h.keys() {
                let key = key.as_str().unwrap_or_default();
                assert!(["alert", "expr", "for", "labels", "annotations"].contains(&key), "{alert}: unknown key {key}");
            }
        }
        names.push(alert.to_string());
    }
    assert!(names.iter().any(|n| n == "FacegateGalleryStale"), "FacegateGalleryStale missing");
}

#[test]
fn the_stale_gallery_alert_fires_after_a_minute_of_the_gauge_at_1() {
    let rule = rules().into_iter().find(|r| r["alert"].as_str() == Some("FacegateGalleryStale")).unwrap();
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
    let mut used = 0;
    for rule in rules() {
        let expr = rule["expr"].as_str().expect("expr").to_owned();
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("facegate_") {
                continue;
            }
            used += 1;
            let known = exported.iter().any(|m| word == *m || word == format!("{m}_total"));
            assert!(known, "{word} is not a metric the daemon exports");
        }
    }
    assert!(used >= 4, "only {used} facegate_* names in the rule expressions");
}
