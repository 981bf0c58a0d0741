//! Checks of a shipped Prometheus alert-rule file, shared by the daemon's
//! and the sync server's tests (`#[path]`-included: each crate keeps its
//! own rule file and list of exported metrics).

use yaml_rust2::{Yaml, YamlLoader};

/// Parses `text` as Prometheus rule groups and checks every rule's shape
/// (a CamelCase alert name, a balanced expression, a `for`, a severity, a
/// summary, no unknown keys); answers the rules.
pub(crate) fn well_formed(text: &str) -> Vec<Yaml> {
    let docs = YamlLoader::load_from_str(text).expect("valid YAML");
    assert_eq!(docs.len(), 1);
    let groups = docs[0]["groups"].as_vec().expect("groups list");
    assert!(!groups.is_empty(), "no rule groups");
    let mut rules = Vec::new();
    for group in groups {
        assert!(group["name"].as_str().is_some_and(|n| !n.is_empty()), "a group without a name");
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
            rules.push(rule.clone());
        }
    }
    rules
}

/// The rule named `alert`.
pub(crate) fn rule<'a>(rules: &'a [Yaml], alert: &str) -> &'a Yaml {
    rules.iter().find(|r| r["alert"].as_str() == Some(alert)).unwrap_or_else(|| panic!("{alert} missing"))
}

/// Asserts every `facegate_*` name in the expressions is one of `exported`
/// (or a `_total`, `_bucket`, `_count`, `_sum` series of one); answers how
/// many names were checked.
pub(crate) fn only_exported_metrics(rules: &[Yaml], exported: &[&str], who: &str) -> usize {
    let mut used = 0;
    for rule in rules {
        let expr = rule["expr"].as_str().expect("expr");
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !word.starts_with("facegate_") {
                continue;
            }
            used += 1;
            let known = exported.iter().any(|m| {
                word == *m || ["_total", "_bucket", "_count", "_sum"].iter().any(|s| word == format!("{m}{s}"))
            });
            assert!(known, "{word} is not a metric {who} exports");
        }
    }
    used
}
