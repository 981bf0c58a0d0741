//! Model-based test: random operations — deltas (some out of order, some
//! replayed), snapshots, standalone edits, shard purges, audit appends and
//! acks, close and reopen — run against the sled store ([`LiveShard`]) and the in-memory
//! model ([`MemoryStore`], BTreeMaps); after every step both must return the
//! same outcome and hold the same state, and the live matrix must hold
//! exactly the stored templates.
#![allow(clippy::unwrap_used)]

mod store_support;

use facegate_daemon::store::{GalleryStore, LiveShard, MemoryStore};
use facegate_face::Template;
use facegate_protocol::{DeltaBatch, DeltaOp, SnapshotEntry, TemplateRecord};
use proptest::prelude::*;
use store_support::*;

const SHARDS: [&str; 2] = ["lobby", "lab"];

#[derive(Debug, Clone)]
enum Step {
    /// `base_shift` moves the batch off the local seq: 0 applies, -1 replays
    /// or overlaps, +1 leaves a gap.
    Delta {
        shard: usize,
        base_shift: i8,
        span: u8,
        ops: Vec<Change>,
    },
    Snapshot {
        shard: usize,
        seq_shift: i8,
        entries: Vec<(u8, u64, Templates)>,
    },
    UpsertLocal {
        person: u8,
        version: u64,
        templates: Templates,
    },
    RemoveLocal {
        person: u8,
    },
    /// Forgets the shards whose bit is set (1: lobby, 2: lab).
    Purge {
        shards: u8,
    },
    Audit {
        tag: u64,
    },
    Ack {
        behind: u8,
    },
    Reopen,
}

#[derive(Debug, Clone)]
enum Change {
    Upsert { person: u8, version: u64, templates: Templates },
    Remove { person: u8 },
}

/// Seeds of templates; `true` marks one of another model.
type Templates = Vec<(u64, bool)>;

fn templates() -> impl Strategy<Value = Templates> {
    prop::collection::vec((any::<u64>(), prop::bool::weighted(0.15)), 0..3)
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (0..8u8, 0..4u64, templates()).prop_map(|(person, version, templates)| Change::Upsert { person, version, templates }),
        1 => (0..8u8).prop_map(|person| Change::Remove { person }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..2usize, prop_oneof![6 => Just(0i8), 1 => Just(-1i8), 1 => Just(1i8)], 1..3u8, prop::collection::vec(change(), 0..5))
            .prop_map(|(shard, base_shift, span, ops)| Step::Delta { shard, base_shift, span, ops }),
        1 => (0..2usize, -1..3i8, prop::collection::vec((0..8u8, 0..4u64, templates()), 0..4))
            .prop_map(|(shard, seq_shift, entries)| Step::Snapshot { shard, seq_shift, entries }),
        2 => (0..8u8, 0..4u64, templates()).prop_map(|(person, version, templates)| Step::UpsertLocal { person, version, templates }),
        1 => (0..8u8).prop_map(|person| Step::RemoveLocal { person }),
        1 => (1..4u8).prop_map(|shards| Step::Purge { shards }),
        2 => any::<u64>().prop_map(|tag| Step::Audit { tag }),
        1 => (0..3u8).prop_map(|behind| Step::Ack { behind }),
        1 => Just(Step::Reopen),
    ]
}

fn person(n: u8) -> String {
    format!("person-{n}")
}

fn make_templates(seeds: &Templates) -> Vec<TemplateRecord> {
    seeds.iter().map(|&(seed, other)| if other { template_of(OTHER_MODEL, seed) } else { template(seed) }).collect()
}

fn local_seq(store: &MemoryStore, shard_name: &str) -> u64 {
    store.shard_seq(&shard(shard_name)).unwrap()
}

/// Runs `step` on both stores and checks they answer alike.
fn run(step: &Step, fixture: &Fixture, live: &mut Option<LiveShard>, model: &MemoryStore) {
    let sled = live.as_ref().unwrap();
    match step {
        Step::Delta { shard: s, base_shift, span, ops } => {
            let local = local_seq(model, SHARDS[*s]);
            let base = local.saturating_add_signed(i64::from(*base_shift));
            let ops: Vec<DeltaOp> = ops
                .iter()
                .map(|op| match op {
                    Change::Upsert { person: p, version, templates } => DeltaOp::Upsert {
                        identity: record(&person(*p), *version),
                        templates: make_templates(templates),
                    },
                    Change::Remove { person: p } => DeltaOp::Remove { identity: id(&person(*p)) },
                })
                .collect();
            let batch =
                DeltaBatch { shard: shard(SHARDS[*s]), epoch: 1, base_seq: base, seq: base + u64::from(*span), ops };
            assert_eq!(sled.apply_delta(&batch).unwrap(), model.apply_delta(&batch).unwrap());
        }
        Step::Snapshot { shard: s, seq_shift, entries } => {
            let seq = local_seq(model, SHARDS[*s]).saturating_add_signed(i64::from(*seq_shift));
            let entries: Vec<SnapshotEntry> = entries
                .iter()
                .map(|(p, version, templates)| SnapshotEntry {
                    identity: record(&person(*p), *version),
                    templates: make_templates(templates),
                })
                .collect();
            let shard_id = shard(SHARDS[*s]);
            assert_eq!(
                sled.apply_snapshot(&shard_id, seq, &entries).unwrap(),
                model.apply_snapshot(&shard_id, seq, &entries).unwrap()
            );
        }
        Step::UpsertLocal { person: p, version, templates } => {
            let (r, t) = (record(&person(*p), *version), make_templates(templates));
            assert_eq!(sled.upsert_local(r.clone(), t.clone()).unwrap(), model.upsert_local(r, t).unwrap());
        }
        Step::RemoveLocal { person: p } => {
            let who = id(&person(*p));
            assert_eq!(sled.remove_local(&who).unwrap(), model.remove_local(&who).unwrap());
        }
        Step::Purge { shards: bits } => {
            let purged: Vec<_> =
                SHARDS.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, s)| shard(s)).collect();
            assert_eq!(sled.purge_shards(&purged).unwrap(), model.purge_shards(&purged).unwrap());
        }
        Step::Audit { tag } => {
            assert_eq!(sled.append_audit(audit_event(*tag)).unwrap(), model.append_audit(audit_event(*tag)).unwrap());
        }
        Step::Ack { behind } => {
            let last = model.pending_audit(usize::MAX).unwrap().last().map_or(0, |e| e.seq);
            let up_to = last.saturating_sub(u64::from(*behind));
            assert_eq!(sled.ack_audit(up_to).unwrap(), model.ack_audit(up_to).unwrap());
        }
        Step::Reopen => {
            drop(live.take());
            *live = Some(fixture.open());
        }
    }
}

fn check_equal(live: &LiveShard, model: &MemoryStore) {
    let entries = model.entries().unwrap();
    assert_eq!(live.entries().unwrap(), entries);
    assert_eq!(live.shards().unwrap(), model.shards().unwrap());
    assert_eq!(live.pending_audit(usize::MAX).unwrap(), model.pending_audit(usize::MAX).unwrap());
    assert_eq!(live.outbox_depth().unwrap(), model.outbox_depth().unwrap());
    let view = live.read();
    assert_eq!(view.identities.len(), entries.len());
    assert_eq!(view.gallery.len(), entries.iter().map(|e| e.templates.len()).sum::<usize>());
    for entry in &entries {
        assert_eq!(view.identities.get(&entry.record.id), Some(&entry.record));
        for t in &entry.templates {
            let probe = Template::from_vector_bytes(MODEL, &t.vector, DIM).unwrap();
            let score = view.gallery.verify(&entry.record.id, &probe).unwrap().unwrap();
            assert!(score > 0.9999, "{} lost a template in the matrix", entry.record.id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_sled_store_behaves_like_the_btreemap_model(steps in prop::collection::vec(step(), 1..40)) {
        let fixture = Fixture::new();
        let mut live = Some(fixture.open());
        let model = MemoryStore::new(model()).with_outbox_epoch(live.as_ref().unwrap().outbox_epoch());
        for step in &steps {
            run(step, &fixture, &mut live, &model);
            check_equal(live.as_ref().unwrap(), &model);
        }
    }
}
