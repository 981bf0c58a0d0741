//! `facegate-daemon gallery add|list|remove|stats`: the contracts evaluation
//! scripts call, on the committed fixture photos with the shipped models.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn daemon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_facegate-daemon")).args(args).output().unwrap()
}

fn photo(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/testdata/photos").join(name).display().to_string()
}

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "status {:?}, stderr: {}", output.status, String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

struct Db {
    _root: tempfile::TempDir,
    dir: PathBuf,
}

impl Db {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("gallery");
        Self { _root: root, dir }
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn run(&self, command: &str, rest: &[&str]) -> Output {
        let mut args = vec!["gallery", command, "--db", self.path()];
        args.extend_from_slice(rest);
        daemon(&args)
    }
}

#[test]
fn add_list_stats_and_remove_round_trip_through_the_command_line() {
    let db = Db::new();
    let added = json(&db.run(
        "add",
        &[
            "--id",
            "obama",
            "--name",
            "Barack Obama",
            &photo("face_recognition/obama.jpg"),
            &photo("face_recognition/obama2.jpg"),
        ],
    ));
    assert_eq!((added["id"].as_str(), added["templates"].as_u64()), (Some("obama"), Some(2)));
    assert_eq!(added["key_created"], Value::Bool(true));
    let key = db.dir.join("device.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o400);
    json(&db.run("add", &["--id", "biden", "--name", "Joe Biden", &photo("face_recognition/biden.jpg")]));

    let list = json(&db.run("list", &[]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let obama = list.iter().find(|e| e["id"] == "obama").unwrap();
    assert_eq!((obama["name"].as_str(), obama["templates"].as_u64()), (Some("Barack Obama"), Some(2)));
    assert_eq!(obama["valid_now"], Value::Bool(true));
    assert!(obama.get("valid_from").is_some() && obama.get("valid_until").is_some());

    let stats = json(&db.run("stats", &[]));
    assert_eq!((stats["identities"].as_u64(), stats["templates"].as_u64()), (Some(2), Some(3)));
    assert_eq!(stats["shards"][0]["shard"], "local");
    assert_eq!(stats["shards"][0]["seq"].as_u64(), Some(2));
    assert_eq!(stats["outbox_depth"].as_u64(), Some(0));
    assert!(stats["db_bytes"].as_u64().unwrap() > 0 && stats["open_ms"].as_f64().unwrap() >= 0.0);

    let removed = json(&db.run("remove", &["obama"]));
    assert_eq!(removed["removed"], Value::Bool(true));
    let list = json(&db.run("list", &[]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    let again = db.run("remove", &["obama"]);
    assert_eq!(again.status.code(), Some(65), "{}", stderr(&again));
    assert!(stderr(&again).contains("obama is not in the gallery"), "{}", stderr(&again));
}

#[test]
fn enrolling_a_face_already_enrolled_under_another_id_is_refused_and_names_it() {
    let db = Db::new();
    json(&db.run("add", &["--id", "obama", "--name", "Barack Obama", &photo("face_recognition/obama.jpg")]));
    let out = db.run("add", &["--id", "someone-else", "--name", "Impostor", &photo("face_recognition/obama2.jpg")]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("matches identity obama (Barack Obama)") && message.contains("dedup"), "{message}");
    assert!(message.contains("obama2.jpg"), "{message}");
    assert_eq!(json(&db.run("list", &[])).as_array().unwrap().len(), 1);
}

#[test]
fn two_different_people_under_one_id_are_refused_like_the_server_does() {
    let db = Db::new();
    let out = db.run(
        "add",
        &["--id", "p1", "--name", "Person", &photo("face_recognition/obama.jpg"), &photo("face_recognition/biden.jpg")],
    );
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("not the same person") && message.contains("biden.jpg"), "{message}");
    // Nothing half-applied: no identity (and the database never created).
    let list = db.run("list", &[]);
    assert!(!list.status.success() || json(&list).as_array().unwrap().is_empty(), "{}", stderr(&list));
    // Two photos of one person still go in together.
    let both = [photo("face_recognition/obama.jpg"), photo("face_recognition/obama2.jpg")];
    let added = json(&db.run("add", &["--id", "obama", "--name", "Barack Obama", &both[0], &both[1]]));
    assert_eq!(added["templates"].as_u64(), Some(2));
}

#[test]
fn names_and_windows_the_server_refuses_are_refused_here_too() {
    let db = Db::new();
    let biden = photo("face_recognition/biden.jpg");
    for (args, says) in [
        (vec!["--name", "  "], "name must not be empty"),
        (vec!["--name", "Joe\u{7}Biden"], "control characters"),
        (vec!["--name", "Joe", "--valid-from", "2000", "--valid-until", "1000"], "later than valid_from"),
    ] {
        let mut all = vec!["--id", "biden"];
        all.extend(args);
        all.push(&biden);
        let out = db.run("add", &all);
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{says}: {}", stderr(&out));
    }
}

#[test]
fn a_photo_without_a_face_is_refused_and_named() {
    let db = Db::new();
    let wall = db._root.path().join("wall.png");
    image::RgbImage::from_pixel(200, 200, image::Rgb([200, 190, 180])).save(&wall).unwrap();
    let out =
        db.run("add", &["--id", "x", "--name", "X", &photo("face_recognition/biden.jpg"), wall.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(stderr(&out).contains("wall.png") && stderr(&out).contains("no face"), "{}", stderr(&out));
}

#[test]
fn a_missing_photo_exits_66_and_a_missing_database_exits_66() {
    let db = Db::new();
    let out = db.run("add", &["--id", "x", "--name", "X", "/nonexistent/photo.jpg"]);
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent/photo.jpg"));
    let out = db.run("list", &[]);
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(stderr(&out).contains("no gallery database"), "{}", stderr(&out));
}

#[test]
fn a_world_readable_key_exits_78_with_the_fix() {
    let db = Db::new();
    json(&db.run("add", &["--id", "biden", "--name", "Joe Biden", &photo("face_recognition/biden.jpg")]));
    let key = db.dir.join("device.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = db.run("list", &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 0400"), "{}", stderr(&out));
}

#[test]
fn a_key_given_with_key_is_used_and_another_key_is_refused() {
    let db = Db::new();
    let key = db._root.path().join("elsewhere.key");
    let key = key.to_str().unwrap();
    json(&db.run("add", &["--key", key, "--id", "biden", "--name", "Joe Biden", &photo("face_recognition/biden.jpg")]));
    assert!(!db.dir.join("device.key").exists());
    assert_eq!(json(&db.run("list", &["--key", key])).as_array().unwrap().len(), 1);
    let out = db.run("list", &[]);
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    let other = db._root.path().join("other.key");
    facegate_daemon::store::DeviceKey::generate(&other).unwrap();
    let out = db.run("list", &["--key", other.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("the key does not match this database"), "{}", stderr(&out));
}
