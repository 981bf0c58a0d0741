//! Crash test (after spacejam/sled's tests/test_crash_recovery.rs): a child
//! process — this test binary re-run with an environment variable — applies
//! deltas to two shards and appends and acknowledges audit events in a loop,
//! printing each seq only after the call returned (durable). The parent kills
//! it with SIGKILL at random moments, many times, and after each kill reopens
//! the database and checks that every shard is at the seq it last reported or
//! the next one, holds exactly the model's state at that seq, and that every
//! audit event reported durable and not acknowledged is still in the outbox.
#![allow(clippy::unwrap_used)]

mod store_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use facegate_daemon::store::{DeltaOutcome, GalleryStore, MemoryStore};
use facegate_protocol::{DeltaBatch, DeltaOp};
use store_support::*;

const CHILD_ENV: &str = "FACEGATE_STORE_CRASH_CHILD";
const CHILD_TEST: &str = "crash_child_writes_until_killed_and_does_nothing_when_run_directly";
const SHARDS: [&str; 2] = ["north", "south"];
const ITERATIONS: usize = 40;

/// The delta that takes `shard` from `seq - 1` to `seq`: the same bytes in
/// the child and the parent. Identity pools of the shards are disjoint, so
/// the state of the store is a function of the two shards' seqs.
fn scripted_delta(shard_index: usize, seq: u64) -> DeltaBatch {
    let mut rng = Rng::new((shard_index as u64 + 1) * 1_000_003 + seq);
    let count = 1 + rng.below(6);
    let ops = (0..count)
        .map(|_| {
            let name = format!("{}-{}", SHARDS[shard_index], rng.below(15));
            if rng.below(4) == 0 {
                DeltaOp::Remove { identity: id(&name) }
            } else {
                let templates = (0..1 + rng.below(3)).map(|_| template(rng.next())).collect();
                DeltaOp::Upsert { identity: record(&name, seq), templates }
            }
        })
        .collect();
    delta(SHARDS[shard_index], seq - 1, seq, ops)
}

#[test]
fn crash_child_writes_until_killed_and_does_nothing_when_run_directly() {
    let Some(root) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let fixture_root = std::path::PathBuf::from(root);
    let config = facegate_daemon::store::StoreConfig::new(fixture_root.join("db"), model());
    let key = facegate_daemon::store::DeviceKey::load(&fixture_root.join("device.key")).unwrap();
    let store = facegate_daemon::store::LiveShard::open(&config, key).unwrap();
    let mut rng = Rng::new(std::process::id().into());
    for round in 0u64.. {
        for (index, name) in SHARDS.iter().enumerate() {
            let next = store.shard_seq(&shard(name)).unwrap() + 1;
            let outcome = store.apply_delta(&scripted_delta(index, next)).unwrap();
            assert!(matches!(outcome, DeltaOutcome::Applied(_)), "{outcome:?}");
            println!("delta {index} {next}");
        }
        let tag = rng.next();
        let seq = store.append_audit(audit_event(tag)).unwrap();
        println!("audit {seq} {tag}");
        if round % 5 == 4 {
            let up_to = seq.saturating_sub(2);
            // Announced first: a kill may land after the ack is durable and
            // before it is reported.
            println!("acking {up_to}");
            store.ack_audit(up_to).unwrap();
            println!("ack {up_to}");
        }
    }
}

#[derive(Default)]
struct Reported {
    seqs: [u64; 2],
    audit: BTreeMap<u64, u64>,
    acked: u64,
    /// An ack announced but not (yet) reported done.
    acking: u64,
}

impl Reported {
    fn read(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["delta", shard, seq] => self.seqs[shard.parse::<usize>().unwrap()] = seq.parse().unwrap(),
            ["audit", seq, tag] => {
                self.audit.insert(seq.parse().unwrap(), tag.parse().unwrap());
            }
            ["acking", up_to] => self.acking = self.acking.max(up_to.parse().unwrap()),
            ["ack", up_to] => self.acked = self.acked.max(up_to.parse().unwrap()),
            _ => {}
        }
    }
}

fn model_at(seqs: [u64; 2]) -> MemoryStore {
    let model = MemoryStore::new(model());
    for (index, &seq) in seqs.iter().enumerate() {
        for s in 1..=seq {
            assert!(matches!(model.apply_delta(&scripted_delta(index, s)).unwrap(), DeltaOutcome::Applied(_)));
        }
    }
    model
}

#[test]
fn a_killed_writer_leaves_every_shard_at_a_reported_seq_and_every_reported_audit_event() {
    let fixture = Fixture::new();
    let seed = std::env::var("FACEGATE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    eprintln!("crash test seed {seed} (FACEGATE_CRASH_SEED)");
    let mut rng = Rng::new(seed);
    let mut reported = Reported::default();
    let started = Instant::now();
    let mut writes_seen = 0;
    for iteration in 0..ITERATIONS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, fixture.root.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader =
            std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(20 + rng.below(280)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        writes_seen += lines.len();
        let before = reported.seqs;
        lines.iter().for_each(|line| reported.read(line));

        let live = fixture.open();
        let mut seqs = [0; 2];
        for (index, name) in SHARDS.iter().enumerate() {
            let seq = live.shard_seq(&shard(name)).unwrap();
            let last = reported.seqs[index];
            assert!(seq == last || seq == last + 1, "iteration {iteration}: {name} at {seq}, reported {last}");
            assert!(seq >= before[index], "iteration {iteration}: {name} went back");
            seqs[index] = seq;
            // A seq applied but not yet printed counts as reported from now on.
            reported.seqs[index] = seq;
        }
        let model = model_at(seqs);
        assert_eq!(live.entries().unwrap(), model.entries().unwrap(), "iteration {iteration}: contents at {seqs:?}");
        let templates: usize = model.entries().unwrap().iter().map(|e| e.templates.len()).sum();
        assert_eq!(live.read().gallery.len(), templates);
        let pending: BTreeMap<u64, Option<String>> =
            live.pending_audit(usize::MAX).unwrap().into_iter().map(|e| (e.seq, e.reason)).collect();
        // An announced, unreported ack is atomic: all of its events are
        // gone, or none is.
        if reported.acking > reported.acked {
            let window: Vec<u64> =
                reported.audit.range(reported.acked + 1..=reported.acking).map(|(&s, _)| s).collect();
            let gone = window.iter().filter(|s| !pending.contains_key(s)).count();
            assert!(
                gone == 0 || gone == window.len(),
                "iteration {iteration}: ack up to {} half applied",
                reported.acking
            );
            if gone > 0 {
                reported.acked = reported.acking;
            }
        }
        for (&seq, &tag) in reported.audit.range(reported.acked + 1..) {
            assert_eq!(pending.get(&seq), Some(&Some(format!("tag {tag}"))), "iteration {iteration}: audit {seq} lost");
        }
        assert!(
            pending.keys().all(|&seq| seq > reported.acked),
            "iteration {iteration}: an acknowledged event came back"
        );
        drop(live);
    }
    eprintln!(
        "crash test: {ITERATIONS} kills, {writes_seen} durable writes reported, final seqs {:?}, {} audit events, {:.1} s",
        reported.seqs,
        reported.audit.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(reported.seqs.iter().all(|&s| s > 0), "the child never got to write");
}
