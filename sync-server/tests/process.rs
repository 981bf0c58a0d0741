//! The binary as operators and evaluation scripts use it: `demo`, `config`,
//! exit statuses, SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Multipart, fixture};

const BIN: &str = env!("CARGO_BIN_EXE_facegate-sync-server");

fn post_form(url: &str, token: &str, form: &Multipart) -> (u16, serde_json::Value) {
    let response = ureq::post(url)
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", &form.content_type())
        .config()
        .http_status_as_error(false)
        .build()
        .send(&form.body()[..])
        .unwrap();
    let status = response.status().as_u16();
    (status, response.into_body().read_json().unwrap())
}

#[test]
fn demo_prints_url_and_token_then_enrolls_refuses_duplicates_and_searches() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env_remove("FACEGATE_MONGODB_URI")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let hello: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let url = hello["url"].as_str().unwrap().to_string();
    let token = hello["token"].as_str().unwrap().to_string();

    let form = Multipart::new().text("name", "Barack Obama").file("photo", &fixture("obama"));
    let (status, created) = post_form(&format!("{url}/v1/identities"), &token, &form);
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let form = Multipart::new().text("name", "Impostor").file("photo", &fixture("obama2"));
    let (status, dup) = post_form(&format!("{url}/v1/identities"), &token, &form);
    assert_eq!(status, 409, "{dup}");
    assert_eq!(dup["id"].as_str(), Some(id));
    assert!(dup["score"].as_f64().unwrap() > 0.9);
    let form = Multipart::new().text("name", "Joe Biden").file("photo", &fixture("biden"));
    assert_eq!(post_form(&format!("{url}/v1/identities"), &token, &form).0, 201);
    let form = Multipart::new().file("photo", &fixture("obama2")).text("k", "2");
    let (status, found) = post_form(&format!("{url}/v1/search"), &token, &form);
    assert_eq!(status, 200, "{found}");
    let matches = found["matches"].as_array().unwrap();
    assert_eq!(matches[0]["id"].as_str(), Some(id));
    assert_eq!(matches[0]["name"].as_str(), Some("Barack Obama"));
    assert!(matches[0]["score"].as_f64().unwrap() > matches[1]["score"].as_f64().unwrap());
    for path in ["/health", "/ready", "/openapi.json"] {
        assert_eq!(ureq::get(&format!("{url}{path}")).call().unwrap().status(), 200, "{path}");
    }

    // SIGTERM: drains and exits 0, and takes its database with it.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[test]
fn config_validate_and_default_and_exit_statuses() {
    let dir = tempfile::tempdir().unwrap();
    // The defaults round-trip through `config validate` (with a secret).
    let default = Command::new(BIN).args(["config", "default"]).output().unwrap();
    assert!(default.status.success());
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, &default.stdout).unwrap();
    let ok = Command::new(BIN)
        .args(["config", "validate", "--config"])
        .arg(&path)
        .env("FACEGATE__AUTH__JWT_SECRET", "k8Hq2xZ0pLw9Vn3Rt7Ys1Bd5Fg4Jm6Ce0Ua2")
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    // No secret outside demo mode: refused, 78.
    let no_secret = Command::new(BIN)
        .args(["config", "validate", "--config"])
        .arg(&path)
        .env_remove("FACEGATE__AUTH__JWT_SECRET")
        .output()
        .unwrap();
    assert_eq!(no_secret.status.code(), Some(78), "{}", String::from_utf8_lossy(&no_secret.stderr));
    // A weak secret: 78.
    let weak = Command::new(BIN)
        .args(["config", "validate", "--config"])
        .arg(&path)
        .env("FACEGATE__AUTH__JWT_SECRET", "changeme")
        .output()
        .unwrap();
    assert_eq!(weak.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("too weak"));

    // An unknown key, a bad value, an environment typo: 78, naming the problem.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlissen = \"x\"\n").unwrap();
    let out = Command::new(BIN).args(["config", "validate", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lissen"));
    let out = Command::new(BIN)
        .args(["config", "validate", "--config"])
        .arg(&path)
        .env("FACEGATE__ENROLLMENT__WORKERS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    // `serve` with a bad configuration exits 78 before touching anything.
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(78));

    // Bad usage: 64.
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(BIN).args(["demo", "--listen", "not-an-address"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn admin_create_reads_the_password_from_stdin_and_refuses_weak_ones() {
    let db = common::database();
    let name = common::fresh_name();
    let run = |user: &str, password: &str| {
        let mut child = Command::new(BIN)
            .args(["admin", "create", "--name", user])
            .env("FACEGATE_MONGODB_URI", &db.uri)
            .env("FACEGATE__MONGODB__DATABASE", &name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("root", "a sufficiently long password");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created admin root"));
    let out = run("root", "a sufficiently long password");
    assert!(!out.status.success(), "a second admin with the same name");
    let out = run("other", "short");
    assert_eq!(out.status.code(), Some(65));
}
