//! A device machine and a server machine, with model stores behind them,
//! talking over a network that drops, duplicates and reorders messages, with
//! disconnects, device restarts, failing stores and a compacted log. After the
//! network heals they converge: the device holds exactly the central state of
//! every shard at the log's head, every audit event is stored centrally
//! exactly once, and no batch was ever applied out of order (the model store
//! asserts it on every apply).

use std::collections::{BTreeMap, VecDeque};

use facegate_protocol::sync::Publish;
use facegate_protocol::sync::device::{DeviceAction, DeviceConfig, DeviceInput, DeviceState, DeviceSync, StatusInfo};
use facegate_protocol::sync::server::{
    FreshnessRead, LogEntry, LogRead, ServerAction, ServerConfig, ServerInput, ServerSync,
};
use facegate_protocol::{
    Assignment, AuditEvent, Command, Decision, DeltaBatch, DeltaOp, DeviceId, IdentityId, IdentityRecord,
    LivenessVerdict, ShardId, ShardProgress, SnapshotEntry, StageMillis, TemplateRecord, TrustedKeys,
};
use proptest::prelude::*;

use crate::strategies::central_key;

type Members = BTreeMap<IdentityId, (IdentityRecord, Vec<TemplateRecord>)>;

const SHARDS: [&str; 2] = ["lobby", "vault"];
/// The log epoch of the simulated centre.
const EPOCH: u64 = 4;
/// Entries per log read: small, so answers are often partial.
const PAGE: usize = 3;

fn shard(i: usize) -> ShardId {
    ShardId::new(SHARDS[i % SHARDS.len()]).unwrap()
}

fn device_id() -> DeviceId {
    DeviceId::new("kiosk-1").unwrap()
}

#[derive(Debug, Clone)]
enum Step {
    Enroll { shard: usize, person: u8 },
    Remove { shard: usize, person: u8 },
    Compact { shard: usize },
    Decide,
    Deliver { down: bool, index: usize },
    Drop { down: bool, index: usize },
    Duplicate { down: bool, index: usize },
    Advance { ms: u32 },
    Disconnect,
    Connect,
    Restart,
    FailNextAuditStore,
    FailNextApply,
    ResyncCommand,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..2usize, 0..6u8).prop_map(|(shard, person)| Step::Enroll { shard, person }),
        2 => (0..2usize, 0..6u8).prop_map(|(shard, person)| Step::Remove { shard, person }),
        1 => (0..2usize).prop_map(|shard| Step::Compact { shard }),
        4 => Just(Step::Decide),
        12 => (any::<bool>(), 0..8usize).prop_map(|(down, index)| Step::Deliver { down, index }),
        2 => (any::<bool>(), 0..8usize).prop_map(|(down, index)| Step::Drop { down, index }),
        2 => (any::<bool>(), 0..8usize).prop_map(|(down, index)| Step::Duplicate { down, index }),
        3 => (0..90_000u32).prop_map(|ms| Step::Advance { ms }),
        1 => Just(Step::Disconnect),
        2 => Just(Step::Connect),
        1 => Just(Step::Restart),
        1 => Just(Step::FailNextAuditStore),
        1 => Just(Step::FailNextApply),
        1 => Just(Step::ResyncCommand),
    ]
}

/// The central database, as the server shell would read it.
#[derive(Debug, Default)]
struct Central {
    /// Every entry ever appended, per shard (for checking); entries with
    /// `seq <= compacted` are no longer readable.
    log: BTreeMap<ShardId, Vec<LogEntry>>,
    compacted: BTreeMap<ShardId, u64>,
    versions: BTreeMap<IdentityId, u64>,
    audit: BTreeMap<u64, AuditEvent>,
    duplicates: usize,
    failed_stores: usize,
    fail_next_store: bool,
    applied: BTreeMap<ShardId, u64>,
    command_id: u64,
}

impl Central {
    fn head(&self, shard: &ShardId) -> u64 {
        self.log.get(shard).map_or(0, |l| l.len() as u64)
    }

    fn state_at(&self, shard: &ShardId, seq: u64) -> Members {
        let mut members = Members::new();
        for entry in self.log.get(shard).into_iter().flatten().take(seq as usize) {
            apply_op(&mut members, &entry.op);
        }
        members
    }

    fn append(&mut self, shard: &ShardId, op: DeltaOp) -> DeltaBatch {
        let head = self.head(shard);
        self.log.entry(shard.clone()).or_default().push(LogEntry { seq: head + 1, op: op.clone() });
        DeltaBatch { shard: shard.clone(), epoch: EPOCH, base_seq: head, seq: head + 1, ops: vec![op] }
    }
}

fn apply_op(members: &mut Members, op: &DeltaOp) {
    match op {
        DeltaOp::Upsert { identity, templates } => {
            members.insert(identity.id.clone(), (identity.clone(), templates.clone()));
        }
        DeltaOp::Remove { identity } => {
            members.remove(identity);
        }
    }
}

/// The kiosk's sled store, as the device shell would use it.
#[derive(Debug, Default)]
struct Kiosk {
    seq: BTreeMap<ShardId, u64>,
    members: BTreeMap<ShardId, Members>,
    outbox: BTreeMap<u64, AuditEvent>,
    next_audit: u64,
    generated: BTreeMap<u64, AuditEvent>,
    last_command_id: u64,
    fail_next_apply: bool,
    applies: usize,
    snapshots: usize,
    failed_applies: usize,
}

/// An owned device input (the machine's borrows a received payload).
enum Input {
    Connected,
    Disconnected,
    Received(Publish),
    Applied { shard: ShardId, seq: u64 },
    ApplyFailed { shard: ShardId },
    OutboxChanged { depth: u64 },
    AuditLoaded { events: Vec<AuditEvent> },
    Tick,
}

struct World {
    now: i64,
    central: Central,
    server: ServerSync,
    kiosk: Kiosk,
    device: DeviceSync,
    connected: bool,
    down: Vec<Publish>,
    up: Vec<Publish>,
}

fn config() -> DeviceConfig {
    DeviceConfig { audit_batch_events: 4, max_buffered_batches: 4, ..DeviceConfig::default() }
}

fn new_device(kiosk: &Kiosk, now: i64) -> DeviceSync {
    let state = DeviceState {
        shards: (0..SHARDS.len())
            .map(|i| ShardProgress { shard: shard(i), seq: kiosk.seq.get(&shard(i)).copied().unwrap_or(0) })
            .collect(),
        last_command_id: kiosk.last_command_id,
        outbox_depth: kiosk.outbox.len() as u64,
        epoch: EPOCH,
        // Fresh per start, as the daemon draws it: a proof answering the
        // previous run's request must not match this run's nonces.
        nonce_seed: {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&now.to_le_bytes());
            seed
        },
        ..DeviceState::default()
    };
    let status = StatusInfo { model_id: Some("m".into()), version: "0.1.0".into(), health: "ok".into() };
    let keys = TrustedKeys::new([central_key().public_key()]);
    DeviceSync::new(device_id(), keys, crate::strategies::device_key(), config(), state, status, now)
}

impl World {
    fn new() -> Self {
        let kiosk = Kiosk { next_audit: 1, ..Kiosk::default() };
        let device = new_device(&kiosk, 0);
        let server =
            ServerSync::new(central_key(), ServerConfig { max_message_bytes: 2048, ..ServerConfig::default() }, 7);
        Self {
            now: 1_000_000,
            central: Central::default(),
            server,
            kiosk,
            device,
            connected: false,
            down: Vec::new(),
            up: Vec::new(),
        }
    }

    fn step(&mut self, step: Step) {
        self.now += 1;
        match step {
            Step::Enroll { shard: s, person } => {
                let id = IdentityId::new(format!("person-{person}")).unwrap();
                let version = self.central.versions.entry(id.clone()).or_insert(0);
                *version += 1;
                let identity = IdentityRecord {
                    id,
                    name: format!("Person {person}"),
                    valid_from: None,
                    valid_until: None,
                    version: *version,
                    offline_access: false,
                };
                let templates = vec![TemplateRecord {
                    model_id: "m".into(),
                    vector: vec![person; 4 * (1 + *version as usize % 3)],
                }];
                let batch = self.central.append(&shard(s), DeltaOp::Upsert { identity, templates });
                self.down.push(self.server.publish_delta(&batch).unwrap());
            }
            Step::Remove { shard: s, person } => {
                let identity = IdentityId::new(format!("person-{person}")).unwrap();
                let batch = self.central.append(&shard(s), DeltaOp::Remove { identity });
                self.down.push(self.server.publish_delta(&batch).unwrap());
            }
            Step::Compact { shard: s } => {
                let head = self.central.head(&shard(s));
                self.central.compacted.insert(shard(s), head);
            }
            Step::Decide => {
                let seq = self.kiosk.next_audit;
                self.kiosk.next_audit += 1;
                let event = AuditEvent {
                    device: device_id(),
                    epoch: 0,
                    seq,
                    at: self.now,
                    decision: Decision::Unknown,
                    identity: None,
                    score: Some(0.25),
                    liveness: LivenessVerdict::Live,
                    liveness_score: None,
                    reason: None,
                    model_id: "m".into(),
                    frames: 1,
                    timings_ms: StageMillis::default(),
                };
                self.kiosk.outbox.insert(seq, event.clone());
                self.kiosk.generated.insert(seq, event);
                let depth = self.kiosk.outbox.len() as u64;
                self.run_device(Input::OutboxChanged { depth });
            }
            Step::Deliver { down, index } => self.deliver(down, index),
            Step::Drop { down, index } => {
                let queue = if down { &mut self.down } else { &mut self.up };
                if !queue.is_empty() {
                    let i = index % queue.len();
                    queue.remove(i);
                }
            }
            Step::Duplicate { down, index } => {
                let queue = if down { &mut self.down } else { &mut self.up };
                if !queue.is_empty() {
                    let i = index % queue.len();
                    let copy = queue[i].clone();
                    queue.push(copy);
                }
            }
            Step::Advance { ms } => {
                self.now += i64::from(ms);
                self.run_device(Input::Tick);
            }
            Step::Disconnect => {
                if self.connected {
                    self.connected = false;
                    self.run_device(Input::Disconnected);
                }
            }
            Step::Connect => {
                if !self.connected {
                    self.connected = true;
                    self.run_device(Input::Connected);
                }
            }
            Step::Restart => {
                self.connected = false;
                self.device = new_device(&self.kiosk, self.now);
            }
            Step::FailNextAuditStore => self.central.fail_next_store = true,
            Step::FailNextApply => self.kiosk.fail_next_apply = true,
            Step::ResyncCommand => {
                self.central.command_id += 1;
                let publish =
                    self.server.command(self.now, &device_id(), self.central.command_id, Command::Resync).unwrap();
                self.down.push(publish);
            }
        }
    }

    fn deliver(&mut self, down: bool, index: usize) {
        let queue = if down { &mut self.down } else { &mut self.up };
        if queue.is_empty() {
            return;
        }
        let message = queue.remove(index % queue.len());
        if down {
            // A disconnected device misses it (the broker dropped its queue).
            if self.connected {
                self.run_device(Input::Received(message));
            }
        } else {
            self.run_server(&message);
        }
    }

    fn run_device(&mut self, first: Input) {
        let mut inputs = VecDeque::from([first]);
        while let Some(input) = inputs.pop_front() {
            let now = self.now;
            let actions = match &input {
                Input::Connected => self.device.handle(now, DeviceInput::Connected),
                Input::Disconnected => self.device.handle(now, DeviceInput::Disconnected),
                Input::Received(p) => {
                    self.device.handle(now, DeviceInput::Received { topic: &p.topic, payload: &p.payload })
                }
                Input::Applied { shard, seq } => {
                    self.device.handle(now, DeviceInput::Applied { shard: shard.clone(), seq: *seq })
                }
                Input::ApplyFailed { shard } => {
                    self.device.handle(now, DeviceInput::ApplyFailed { shard: shard.clone() })
                }
                Input::OutboxChanged { depth } => self.device.handle(now, DeviceInput::OutboxChanged { depth: *depth }),
                Input::AuditLoaded { events } => {
                    self.device.handle(now, DeviceInput::AuditLoaded { events: events.clone() })
                }
                Input::Tick => self.device.handle(now, DeviceInput::Tick),
            };
            for action in actions {
                match action {
                    DeviceAction::Publish(p) => {
                        assert!(self.connected, "published while offline: {p:?}");
                        self.up.push(p);
                    }
                    DeviceAction::ApplyDelta(batch) => {
                        if std::mem::take(&mut self.kiosk.fail_next_apply) {
                            self.kiosk.failed_applies += 1;
                            inputs.push_back(Input::ApplyFailed { shard: batch.shard });
                            continue;
                        }
                        let seq = self.kiosk.seq.entry(batch.shard.clone()).or_insert(0);
                        assert_eq!(batch.base_seq, *seq, "applied out of order");
                        *seq = batch.seq;
                        let members = self.kiosk.members.entry(batch.shard.clone()).or_default();
                        for op in &batch.ops {
                            apply_op(members, op);
                        }
                        assert_eq!(*members, self.central.state_at(&batch.shard, batch.seq), "not a central state");
                        self.kiosk.applies += 1;
                        inputs.push_back(Input::Applied { shard: batch.shard, seq: batch.seq });
                    }
                    DeviceAction::ApplySnapshot { shard, seq, entries } => {
                        if std::mem::take(&mut self.kiosk.fail_next_apply) {
                            self.kiosk.failed_applies += 1;
                            inputs.push_back(Input::ApplyFailed { shard });
                            continue;
                        }
                        let current = self.kiosk.seq.entry(shard.clone()).or_insert(0);
                        assert!(seq > *current, "snapshot {seq} would move {current} back");
                        *current = seq;
                        let members: Members = entries
                            .into_iter()
                            .map(|SnapshotEntry { identity, templates }| (identity.id.clone(), (identity, templates)))
                            .collect();
                        assert_eq!(members, self.central.state_at(&shard, seq), "snapshot is not a central state");
                        self.kiosk.members.insert(shard.clone(), members);
                        self.kiosk.applies += 1;
                        self.kiosk.snapshots += 1;
                        inputs.push_back(Input::Applied { shard, seq });
                    }
                    DeviceAction::LoadAudit { limit } => {
                        let events = self.kiosk.outbox.values().take(limit).cloned().collect();
                        inputs.push_back(Input::AuditLoaded { events });
                    }
                    DeviceAction::AckAudit { up_to_seq } => {
                        let acked: Vec<u64> = self.kiosk.outbox.range(..=up_to_seq).map(|(&seq, _)| seq).collect();
                        for seq in acked {
                            assert!(self.central.audit.contains_key(&seq), "event {seq} deleted but not stored");
                            self.kiosk.outbox.remove(&seq);
                        }
                        inputs.push_back(Input::OutboxChanged { depth: self.kiosk.outbox.len() as u64 });
                    }
                    DeviceAction::Execute { id, command } => {
                        assert_eq!(command, Command::Resync);
                        assert!(id > self.kiosk.last_command_id);
                        self.kiosk.last_command_id = id;
                    }
                    // Commands are refused unless newer than the last one
                    // run, and deltas unless they follow the applied seq: on
                    // a network that duplicates and reorders, expected here.
                    DeviceAction::Rejected { reason, .. }
                        if reason.label() == "replayed_command"
                            || reason.label() == "unknown_nonce"
                            || reason.is_ordering() => {}
                    DeviceAction::Subscribe(_)
                    | DeviceAction::Unsubscribe(_)
                    | DeviceAction::PurgeShards(_)
                    | DeviceAction::Persist(_)
                    | DeviceAction::TrustKeys(_) => {
                        panic!("the assignment, epoch and key never change here: {action:?}")
                    }
                    DeviceAction::Rejected { topic, reason } => panic!("rejected on {topic}: {reason}"),
                }
            }
        }
    }

    fn run_server(&mut self, message: &Publish) {
        let mut actions = self.server.handle(
            self.now,
            ServerInput::Received {
                topic: &message.topic,
                payload: &message.payload,
                key: &crate::strategies::device_key().public_key(),
            },
        );
        while !actions.is_empty() {
            let mut next = Vec::new();
            for action in actions {
                match action {
                    ServerAction::Publish(p) => self.down.push(p),
                    ServerAction::ReadLog { device, shard, after_seq } => {
                        let head = self.central.head(&shard);
                        let compacted = self.central.compacted.get(&shard).copied().unwrap_or(0);
                        let read = if after_seq < compacted {
                            LogRead::Compacted { head }
                        } else {
                            let entries = self.central.log.get(&shard).into_iter().flatten();
                            let entries = entries.filter(|e| e.seq > after_seq).take(PAGE).cloned().collect();
                            LogRead::Entries { epoch: EPOCH, head, entries }
                        };
                        next.extend(
                            self.server.handle(self.now, ServerInput::LogRead { device, shard, after_seq, read }),
                        );
                    }
                    ServerAction::ReadSnapshot { device, shard, after_seq } => {
                        let seq = self.central.head(&shard);
                        let entries = self
                            .central
                            .state_at(&shard, seq)
                            .into_values()
                            .map(|(identity, templates)| SnapshotEntry { identity, templates })
                            .collect();
                        let read = LogRead::Snapshot { epoch: EPOCH, seq, entries };
                        next.extend(
                            self.server.handle(self.now, ServerInput::LogRead { device, shard, after_seq, read }),
                        );
                    }
                    ServerAction::StoreAudit { device, epoch, events, up_to_seq } => {
                        let input = if std::mem::take(&mut self.central.fail_next_store) {
                            self.central.failed_stores += 1;
                            ServerInput::AuditStoreFailed { device, up_to_seq }
                        } else {
                            for event in events {
                                match self.central.audit.get(&event.seq) {
                                    Some(stored) => {
                                        assert_eq!(stored, &event, "one (device, seq), two events");
                                        self.central.duplicates += 1;
                                    }
                                    None => {
                                        self.central.audit.insert(event.seq, event);
                                    }
                                }
                            }
                            ServerInput::AuditStored { device, epoch, up_to_seq }
                        };
                        next.extend(self.server.handle(self.now, input));
                    }
                    ServerAction::RecordApplied { shard, seq, .. } => {
                        let known = self.central.applied.entry(shard).or_insert(0);
                        *known = (*known).max(seq);
                    }
                    ServerAction::RecordStatus(_) => {}
                    ServerAction::ReadFreshness { device, nonce } => {
                        let shards: Vec<ShardId> = (0..SHARDS.len()).map(shard).collect();
                        let heads = shards
                            .iter()
                            .map(|s| ShardProgress { shard: s.clone(), seq: self.central.head(s) })
                            .collect();
                        let read = FreshnessRead { epoch: EPOCH, assignment: Assignment { version: 0, shards }, heads };
                        next.extend(
                            self.server
                                .handle(self.now, ServerInput::FreshnessRead { device, nonce, read: Some(read) }),
                        );
                    }
                    ServerAction::Rejected { topic, reason } => panic!("server rejected {topic}: {reason}"),
                    ServerAction::DeviceAhead { shard, device_seq, head, .. } => {
                        panic!("device ahead on {shard}: {device_seq} > {head}")
                    }
                }
            }
            actions = next;
        }
    }

    fn converged(&self) -> bool {
        (0..SHARDS.len()).all(|i| self.kiosk.seq.get(&shard(i)).copied().unwrap_or(0) == self.central.head(&shard(i)))
            && self.kiosk.outbox.is_empty()
            && self.device.is_idle()
    }

    /// A world that connects, takes `steps`, then heals; checked.
    fn healed_after(steps: Vec<Step>) -> Self {
        let mut world = Self::new();
        world.step(Step::Connect);
        for step in steps {
            world.step(step);
        }
        world.heal();
        world.check();
        world
    }

    /// The network heals: the device stays connected, nothing is lost or
    /// reordered any more, and time passes until everything is settled.
    fn heal(&mut self) -> usize {
        if !self.connected {
            self.step(Step::Connect);
        }
        for round in 0..1_000 {
            while !self.down.is_empty() || !self.up.is_empty() {
                if !self.down.is_empty() {
                    self.deliver(true, 0);
                }
                if !self.up.is_empty() {
                    self.deliver(false, 0);
                }
            }
            if self.converged() {
                return round;
            }
            let next = self.device.next_deadline().unwrap_or(self.now + 1_000);
            self.now = next.max(self.now + 1);
            self.run_device(Input::Tick);
        }
        panic!(
            "no convergence: kiosk {:?}, heads {:?}, outbox {}",
            self.kiosk.seq,
            self.central.log.keys(),
            self.kiosk.outbox.len()
        );
    }

    fn check(&self) {
        for i in 0..SHARDS.len() {
            let s = shard(i);
            let head = self.central.head(&s);
            assert_eq!(self.kiosk.seq.get(&s).copied().unwrap_or(0), head, "{s}");
            let members = self.kiosk.members.get(&s).cloned().unwrap_or_default();
            assert_eq!(members, self.central.state_at(&s, head), "{s}");
        }
        // Exactly once: every event generated is stored, once, unchanged.
        assert_eq!(self.central.audit, self.kiosk.generated);
        assert!(self.kiosk.outbox.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn device_and_server_converge_over_a_lossy_network(steps in proptest::collection::vec(step(), 0..250)) {
        let mut world = World::healed_after(steps);
        // A further enrollment after healing reaches the device too.
        world.step(Step::Enroll { shard: 0, person: 99 });
        world.step(Step::Decide);
        world.heal();
        world.check();
    }
}

#[test]
fn a_long_outage_with_a_compacted_log_ends_in_a_snapshot() {
    let mut world = World::new();
    world.step(Step::Connect);
    world.heal();
    world.step(Step::Disconnect);
    for person in 0..30u8 {
        world.step(Step::Enroll { shard: 1, person: person % 7 });
        world.step(Step::Decide);
    }
    world.step(Step::Remove { shard: 1, person: 3 });
    world.step(Step::Compact { shard: 1 });
    // The broker dropped the device's queue.
    world.down.clear();
    let before = world.kiosk.applies;
    let rounds = world.heal();
    world.check();
    assert_eq!(world.kiosk.applies - before, 1, "one snapshot, no deltas");
    assert!(rounds <= 2, "{rounds}");
    assert_eq!(world.central.applied.get(&shard(1)).copied(), Some(31), "the server saw the device's ack");
}

#[test]
fn every_other_message_lost_still_converges() {
    let mut world = World::new();
    world.step(Step::Connect);
    for n in 0..60u8 {
        world.step(Step::Enroll { shard: usize::from(n % 2), person: n % 5 });
        world.step(Step::Decide);
        let down = n % 3 != 0;
        world.step(Step::Drop { down, index: 0 });
        world.step(Step::Deliver { down: true, index: 0 });
        world.step(Step::Deliver { down: false, index: 0 });
        world.step(Step::Advance { ms: 2_000 });
    }
    world.heal();
    world.check();
}

/// The random runs above are not vacuous: across a fixed sample of them,
/// every hard path is taken.
#[test]
fn the_random_runs_take_every_hard_path() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = proptest::collection::vec(step(), 100..250);
    let (mut snapshots, mut duplicates, mut failed_applies, mut failed_stores, mut applies) = (0, 0, 0, 0, 0);
    for _ in 0..40 {
        let steps = strategy.new_tree(&mut runner).unwrap().current();
        let world = World::healed_after(steps);
        snapshots += world.kiosk.snapshots;
        applies += world.kiosk.applies;
        failed_applies += world.kiosk.failed_applies;
        duplicates += world.central.duplicates;
        failed_stores += world.central.failed_stores;
    }
    assert!(
        snapshots > 0 && duplicates > 0 && failed_applies > 0 && failed_stores > 0,
        "{snapshots} {duplicates} {failed_applies} {failed_stores}"
    );
    assert!(applies > 40 * 5, "{applies}");
}
