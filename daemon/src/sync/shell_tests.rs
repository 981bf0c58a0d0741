//! The shell's commands against a real store with injected write failures
//! (a full or read-only disk): order of effects and idempotence.
#![allow(clippy::unwrap_used)]

use super::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Instant;

use crate::store::{DeviceKey, GalleryModel, StoreConfig, pending_key_path};
use facegate_protocol::{IdentityId, IdentityRecord, TemplateRecord};

const DIM: usize = 4;

struct Fixture {
    root: tempfile::TempDir,
    ctx: SyncContext,
}

fn config(root: &Path) -> StoreConfig {
    StoreConfig::new(root.join("db"), GalleryModel { id: "test-model".into(), dim: DIM })
}

fn entry(name: &str, axis: usize) -> SnapshotEntry {
    let mut vector = [0f32; DIM];
    vector[axis % DIM] = 1.0;
    SnapshotEntry {
        identity: IdentityRecord {
            id: IdentityId::new(name).unwrap(),
            name: name.into(),
            valid_from: None,
            valid_until: None,
            version: 1,
            offline_access: false,
        },
        templates: vec![TemplateRecord {
            model_id: "test-model".into(),
            vector: vector.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }],
    }
}

/// The shell's context over the store in `root` (created when new),
/// opened as the daemon opens it (finishing an interrupted rotation).
/// `open`, again while the database is `Locked` by this process's own
/// previous handle: sled lets go of its lock when its background flusher
/// ends, a moment after the drop (longer on a loaded machine).
fn reopened<T>(open: impl Fn() -> Result<T, crate::store::StoreError>) -> Result<T, crate::store::StoreError> {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(crate::store::StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn context_at(root: &Path) -> SyncContext {
    let sync_dir = root.join("sync");
    std::fs::create_dir_all(&sync_dir).unwrap();
    let key_path = root.join("device.key");
    let shard = reopened(|| crate::store::open_with_key_file(&config(root), &key_path)).unwrap();
    SyncContext {
        dir: sync_dir,
        shard: Arc::new(shard),
        key_path,
        model_id: "test-model".into(),
        outbox: Arc::default(),
        metrics: None,
        shutdown: Arc::default(),
        connected: Arc::default(),
        config: DeviceConfig::default(),
        freshness: FreshnessGate::off(),
    }
}

async fn execute_command(ctx: &SyncContext, id: u64, command: Command) -> Result<Option<Report>, SyncError> {
    let (client, _events) = AsyncClient::new(rumqttc::v5::MqttOptions::new("test", "127.0.0.1", 1), 8);
    execute(ctx, &client, DeviceAction::Execute { id, command }).await
}

impl Fixture {
    /// A store with two identities in shard `north`.
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let ctx = context_at(root.path());
        let north = ShardId::new("north").unwrap();
        ctx.shard.apply_snapshot(&north, 3, &[entry("alice", 0), entry("bob", 1)]).unwrap();
        Self { root, ctx }
    }

    async fn execute(&self, id: u64, command: Command) -> Result<Option<Report>, SyncError> {
        execute_command(&self.ctx, id, command).await
    }

    fn identities(&self) -> usize {
        self.ctx.shard.read().identities.len()
    }

    fn stored_identities(&self) -> usize {
        self.ctx.shard.entries().unwrap().len()
    }
}

#[tokio::test]
async fn a_wipe_whose_write_fails_leaves_no_marker_and_no_one_to_grant() {
    let fixture = Fixture::new();
    fixture.ctx.shard.store().fail_next_flushes(1);
    assert!(fixture.execute(7, Command::Wipe).await.is_err());
    assert!(!is_wiped(&fixture.ctx.dir), "the wiped marker was written before the shards were emptied");
    assert_eq!(state::read_last_command(&fixture.ctx.dir).unwrap(), 0, "a failed command was recorded as done");
    assert_eq!(fixture.identities(), 0, "the matcher still holds identities the failed wipe removed in sled");

    // The next delivery of the same command finishes the wipe.
    fixture.execute(7, Command::Wipe).await.unwrap();
    assert!(is_wiped(&fixture.ctx.dir));
    assert_eq!(state::read_last_command(&fixture.ctx.dir).unwrap(), 7);
    assert_eq!(fixture.identities(), 0);
    assert_eq!(fixture.stored_identities(), 0);
}

#[tokio::test]
async fn a_wipe_marker_left_over_a_full_gallery_is_finished_when_sync_starts() {
    let fixture = Fixture::new();
    state::write_atomically(&fixture.ctx.dir, WIPED, b"an older build wrote the marker first\n").unwrap();
    run(fixture.ctx.clone()).await.unwrap();
    assert_eq!(fixture.identities(), 0);
    assert_eq!(fixture.stored_identities(), 0);
}

#[tokio::test]
async fn a_command_that_failed_is_not_recorded_as_executed() {
    let fixture = Fixture::new();
    fixture.ctx.shard.store().fail_next_flushes(1);
    assert!(fixture.execute(9, Command::RotateKey).await.is_err());
    assert_eq!(state::read_last_command(&fixture.ctx.dir).unwrap(), 0);
    fixture.execute(9, Command::RotateKey).await.unwrap();
    assert_eq!(state::read_last_command(&fixture.ctx.dir).unwrap(), 9);
}

#[tokio::test]
async fn a_key_rotation_repeated_after_its_flush_failed_keeps_the_key_that_opens_the_database() {
    let fixture = Fixture::new();
    let before = fixture.ctx.shard.entries().unwrap();
    fixture.ctx.shard.store().fail_next_flushes(1);
    assert!(fixture.execute(4, Command::RotateKey).await.is_err());
    // The database is under the new key in memory; only `.new` holds it.
    assert!(pending_key_path(&fixture.ctx.key_path).exists());
    fixture.execute(4, Command::RotateKey).await.unwrap();
    assert!(!pending_key_path(&fixture.ctx.key_path).exists());
    assert_eq!(fixture.ctx.shard.entries().unwrap(), before);

    let Fixture { root, ctx } = fixture;
    let key_path = ctx.key_path.clone();
    drop(ctx);
    let reopened = LiveShard::open(&config(root.path()), DeviceKey::load(&key_path).unwrap()).unwrap();
    assert_eq!(reopened.entries().unwrap(), before);
}

// Crash tests (DESIGN "a crash test kills a child process with SIGKILL"):
// this test binary re-runs itself as the child with an environment variable
// naming the directory; the parent kills it at random moments.

const CHILD_ENV: &str = "FACEGATE_SHELL_CRASH_CHILD";
const CHILD_TEST: &str =
    "sync::shell::tests::crash_child_runs_commands_until_killed_and_does_nothing_when_run_directly";

/// Child: `rotate` rotates the key again and again, printing each command
/// id once it returned; `wipe` wipes once.
#[tokio::test]
async fn crash_child_runs_commands_until_killed_and_does_nothing_when_run_directly() {
    let Some(spec) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let spec = spec.into_string().unwrap();
    let (mode, root) = spec.split_once(':').unwrap();
    let ctx = context_at(Path::new(root));
    match mode {
        "rotate" => {
            for id in state::read_last_command(&ctx.dir).unwrap() + 1.. {
                execute_command(&ctx, id, Command::RotateKey).await.unwrap();
                println!("done {id}");
                std::io::Write::flush(&mut std::io::stdout()).unwrap();
            }
        }
        _ => {
            execute_command(&ctx, 1, Command::Wipe).await.unwrap();
            println!("wiped");
        }
    }
}

fn spawn_child(mode: &str, root: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{}", root.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills `child` after `delay`; returns the lines it printed.
fn kill_after(mut child: std::process::Child, delay: std::time::Duration) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

/// A small deterministic generator for kill delays.
fn delays(seed: u64) -> impl FnMut(u64) -> std::time::Duration {
    let mut state = seed | 1;
    move |most_ms| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::time::Duration::from_millis(state % most_ms)
    }
}

#[test]
fn a_key_rotation_killed_at_any_moment_leaves_a_gallery_that_opens_with_the_key_file() {
    let fixture = Fixture::new();
    let before = fixture.ctx.shard.entries().unwrap();
    let root = fixture.root.path().to_path_buf();
    let Fixture { root: _guard, ctx } = fixture;
    drop(ctx);
    let mut next_delay = delays(0x5eed_2026);
    let mut done = 0u64;
    let started = Instant::now();
    for iteration in 0..25 {
        let lines = kill_after(spawn_child("rotate", &root), next_delay(250) + std::time::Duration::from_millis(20));
        for line in &lines {
            // The first one follows libtest's "test … ... " on the same line.
            if let Some((_, id)) = line.rsplit_once("done ") {
                done = done.max(id.trim().parse().unwrap());
            }
        }
        // As the daemon starts: the key file (or a rotation's leftover)
        // opens the database, which holds the same gallery.
        let ctx = context_at(&root);
        assert_eq!(ctx.shard.entries().unwrap(), before, "iteration {iteration}");
        assert!(!pending_key_path(&ctx.key_path).exists(), "iteration {iteration}: a leftover key survived the start");
        let recorded = state::read_last_command(&ctx.dir).unwrap();
        assert!(
            recorded == done || recorded == done + 1,
            "iteration {iteration}: last command {recorded}, done {done}"
        );
        done = recorded;
        drop(ctx);
        reopened(|| LiveShard::open(&config(&root), DeviceKey::load(&root.join("device.key")).unwrap()))
            .unwrap_or_else(|e| panic!("iteration {iteration}: the key file alone does not open the database: {e}"));
    }
    eprintln!("rotation crash test: 25 kills, {done} rotations, {:.1} s", started.elapsed().as_secs_f64());
    assert!(done > 0, "the child never got to rotate");
}

#[test]
fn a_wipe_killed_at_any_moment_never_leaves_the_marker_over_a_full_gallery() {
    let mut next_delay = delays(0x0dd_2026);
    let mut outcomes = [0usize; 2];
    for iteration in 0..25 {
        let fixture = Fixture::new();
        let root = fixture.root.path().to_path_buf();
        let Fixture { root: _guard, ctx } = fixture;
        drop(ctx);
        kill_after(spawn_child("wipe", &root), next_delay(120));
        let ctx = context_at(&root);
        let left = ctx.shard.entries().unwrap().len();
        if is_wiped(&ctx.dir) {
            assert_eq!(left, 0, "iteration {iteration}: the wiped marker over a gallery of {left}");
            outcomes[1] += 1;
        } else {
            assert!(left == 0 || left == 2, "iteration {iteration}: a half-emptied shard ({left})");
            outcomes[0] += 1;
        }
    }
    eprintln!("wipe crash test: {} killed before the marker, {} after", outcomes[0], outcomes[1]);
}
