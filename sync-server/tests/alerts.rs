//! The shipped Prometheus alert rules parse and use only metrics the server exports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use facegate_sync_server::metrics;
use yaml_rust2::{Yaml, YamlLoader};

const RULES: &str = include_str!("../alerts/facegate-sync-server.rules.yml");

#[test]
fn alert_rules_are_well_formed_prometheus_rule_groups() {
    let docs = YamlLoader::load_from_str(RULES).expect("valid YAML");
    assert_eq!(docs.len(), 1);
    let groups = docs[0]["groups"].as_vec().expect("groups list");
    assert!(!groups.is_empty());
    let mut names = Vec::new();
    for group in groups {
        assert!(group["name"].as_str().is_some_and(|n| !n.is_empty()));
        for rule in group["rules"].as_vec().expect("rules list") {
            let alert = rule["alert"].as_str().expect("alert name");
            assert!(alert.chars().all(|c| c.is_ascii_alphanumeric()), "{alert}");
            let expr = rule["expr"].as_str().expect("expr").trim();
            assert!(!expr.is_empty(), "{alert}");
            assert_eq!(expr.matches('(').count(), expr.matches(')').count(), "{alert}: unbalanced parentheses");
            let r#for = rule["for"].as_str().expect("for");
            assert!(r#for.ends_with('m') || r#for.ends_with('s'), "{alert}: {for}");
            assert!(matches!(rule["labels"]["severity"].as_str(), Some("critical" | "warning")), "{alert}");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{alert}");
            if let Yaml::Hash(h) = rule {
                for key in h.keys() {
                    let key = key.as_str().unwrap_or_default();
                    assert!(
                        ["alert", "expr", "for", "labels", "annotations"].contains(&key),
                        "{alert}: unknown key {key}"
                    );
                }
            }
            names.push(alert.to_string());
        }
    }
    for wanted in
        ["FacegateSyncServerDown", "FacegateHighErrorRate", "FacegateHighLatency", "FacegateMongoPoolExhausted"]
    {
        assert!(names.iter().any(|n| n == wanted), "{wanted} missing");
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
    let docs = YamlLoader::load_from_str(RULES).expect("valid YAML");
    let exprs: Vec<&str> = docs[0]["groups"]
        .as_vec()
        .expect("groups list")
        .iter()
        .flat_map(|g| g["rules"].as_vec().expect("rules list"))
        .map(|r| r["expr"].as_str().expect("expr"))
        .collect();
    let mut used = 0;
    for word in exprs.iter().flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))) {
        if !word.starts_with("facegate_") {
            continue;
        }
        used += 1;
        let known = exported.iter().any(|m| {
            word == *m
                || [format!("{m}_total"), format!("{m}_bucket"), format!("{m}_count"), format!("{m}_sum")]
                    .contains(&word.to_string())
        });
        assert!(known, "{word} is not a metric the server exports");
    }
    assert!(used >= 8, "only {used} facegate_* names in the rule expressions");
}
