//! The shipped systemd units are checked by systemd's own tools: the service
//! verifies clean (any diagnostic fails the test), its sandbox scores at most
//! 2.0 on `systemd-analyze security`, and the sysusers and tmpfiles snippets
//! apply to an empty root. `tests/setup.sh` installs systemd's tools; their
//! absence is a failure, not a skip.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn systemd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// The service with its binary path pointed at the binary under test
/// (`verify` checks that ExecStart exists and is executable).
fn service_for_test(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(systemd_dir().join("facegate-daemon.service")).unwrap();
    assert!(text.contains("/usr/bin/facegate-daemon "), "ExecStart no longer names /usr/bin/facegate-daemon");
    let text = text.replace("/usr/bin/facegate-daemon", env!("CARGO_BIN_EXE_facegate-daemon"));
    let path = dir.join("facegate-daemon.service");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap_or_else(|e| panic!("{program} is not runnable ({e}); tests/setup.sh installs systemd"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_service_unit_verifies_without_any_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let unit = service_for_test(dir.path());
    let (ok, output) = run("systemd-analyze", &["verify", unit.to_str().unwrap()]);
    assert!(ok && output.trim().is_empty(), "systemd-analyze verify:\n{output}");
}

#[test]
fn the_service_sandbox_scores_at_most_2_0() {
    let dir = tempfile::tempdir().unwrap();
    let unit = service_for_test(dir.path());
    let (_, output) = run("systemd-analyze", &["security", "--offline=true", "--no-pager", unit.to_str().unwrap()]);
    let line = output.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{output}"));
    let score: f32 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score from {line:?}"));
    eprintln!("{}", line.trim());
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{output}");
}

#[test]
fn the_sysusers_and_tmpfiles_snippets_apply_to_an_empty_root() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let root_arg = format!("--root={}", root.path().display());
    let sysusers = systemd_dir().join("facegate.sysusers");
    let (ok, output) = run("systemd-sysusers", &[&root_arg, sysusers.to_str().unwrap()]);
    assert!(ok, "systemd-sysusers:\n{output}");
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("facegate:") && l.ends_with(":/usr/sbin/nologin")), "{passwd}");
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l.starts_with("video:") && l.ends_with("facegate")), "{group}");

    let tmpfiles = systemd_dir().join("facegate.tmpfiles");
    let (ok, output) = run("systemd-tmpfiles", &["--create", &root_arg, tmpfiles.to_str().unwrap()]);
    assert!(ok, "systemd-tmpfiles:\n{output}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.path().join("etc/facegate")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750);
}
