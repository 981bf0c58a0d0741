//! The Yocto layer stays in step with the code: the configuration the image
//! ships passes `config validate`, the recipe installs files that exist, and
//! the crates include lists, with its checksum, every crates.io package the
//! daemon's build graph locks (BitBake fetches exactly those and builds
//! offline). Regenerate the include with `yocto/meta-facegate/tools/crates-inc.py`.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn recipe_dir() -> PathBuf {
    root().join("yocto/meta-facegate/recipes-facegate/facegate-daemon")
}

#[test]
fn the_shipped_daemon_configuration_validates() {
    let config = recipe_dir().join("files/daemon.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_facegate-daemon"))
        .args(["config", "validate", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_file_the_recipe_installs_from_the_tree_exists() {
    let recipe = std::fs::read_to_string(recipe_dir().join("facegate-daemon_0.1.0.bb")).unwrap();
    let mut checked = 0;
    for word in recipe.split_whitespace() {
        if let Some(path) = word.strip_prefix("${S}/") {
            let path = path.replace("$m", "{m}");
            for m in ["yunet-2023mar", "dlib-resnet29"] {
                let file = root().join(path.replace("{m}", m));
                assert!(file.is_file(), "the recipe installs {} which does not exist", file.display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 8, "only {checked} paths found in the recipe");
}

/// One locked package: version, checksum (registry packages), dependencies.
type Locked<'a> = (&'a str, Option<&'a str>, Vec<&'a str>);

#[test]
fn the_crates_include_covers_the_daemons_locked_dependencies() {
    let lock: toml::Table = toml::from_str(&std::fs::read_to_string(root().join("Cargo.lock")).unwrap()).unwrap();
    let packages = lock["package"].as_array().unwrap();
    let mut by_name: BTreeMap<&str, Vec<Locked<'_>>> = BTreeMap::new();
    for p in packages {
        let deps = p
            .get("dependencies")
            .and_then(|d| d.as_array())
            .map_or_else(Vec::new, |d| d.iter().map(|v| v.as_str().unwrap()).collect());
        by_name.entry(p["name"].as_str().unwrap()).or_default().push((
            p["version"].as_str().unwrap(),
            p.get("checksum").and_then(|c| c.as_str()),
            deps,
        ));
    }
    // Walk the graph from facegate-daemon (all targets and features: a superset).
    let mut needed: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec!["facegate-daemon".to_owned()];
    while let Some(spec) = stack.pop() {
        if !seen.insert(spec.clone()) {
            continue;
        }
        let mut words = spec.split_whitespace();
        let name = words.next().unwrap();
        let version = words.next();
        for (v, checksum, deps) in &by_name[name] {
            if version.is_some_and(|want| want != *v) {
                continue;
            }
            if let Some(sum) = checksum {
                needed.insert((name.to_owned(), (*v).to_owned(), (*sum).to_owned()));
            }
            stack.extend(deps.iter().map(|d| (*d).to_owned()));
        }
    }
    let include = std::fs::read_to_string(recipe_dir().join("facegate-daemon-crates.inc")).unwrap();
    let missing: Vec<String> = needed
        .iter()
        .filter(|(name, version, sum)| {
            !include.contains(&format!("crate://crates.io/{name}/{version} "))
                || !include.contains(&format!("SRC_URI[{name}-{version}.sha256sum] = \"{sum}\""))
        })
        .map(|(name, version, _)| format!("{name} {version}"))
        .collect();
    assert!(needed.len() > 100, "the walk found only {} crates", needed.len());
    assert!(
        missing.is_empty(),
        "facegate-daemon-crates.inc lacks {missing:?}; run yocto/meta-facegate/tools/crates-inc.py Cargo.lock > {}",
        recipe_dir().join("facegate-daemon-crates.inc").display()
    );
    // Nor does it fetch what the lock no longer holds (a stale include).
    let locked: BTreeSet<String> = packages
        .iter()
        .filter(|p| p.get("checksum").is_some())
        .map(|p| format!("{}/{}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap()))
        .collect();
    let stale: Vec<&str> = include
        .lines()
        .filter_map(|l| l.trim().strip_prefix("crate://crates.io/"))
        .map(|l| l.trim_end_matches(" \\").trim())
        .filter(|crate_version| !locked.contains(*crate_version))
        .collect();
    assert!(stale.is_empty(), "facegate-daemon-crates.inc fetches crates Cargo.lock no longer holds: {stale:?}");
}
