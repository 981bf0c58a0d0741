//! Freshness proofs, assignments, epochs and key rollover.

use super::*;

/// The nonces of the freshness requests published.
fn freshness_requests(out: &[DeviceAction]) -> Vec<u64> {
    out.iter()
        .filter_map(|a| match a {
            DeviceAction::Publish(p) if p.topic.ends_with("/up") => {
                match decode_unverified::<UpMessage>(&p.payload).unwrap().body {
                    Up::FreshnessRequest { nonce } => Some(nonce),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

fn proof(nonce: u64, epoch: u64, version: u64, shards: &[(&str, u64)]) -> Incoming {
    down(Down::Freshness(FreshnessProof {
        nonce,
        epoch,
        assignment: Assignment { version, shards: shards.iter().map(|(s, _)| ShardId::new(*s).unwrap()).collect() },
        heads: shards.iter().map(|(s, seq)| ShardProgress { shard: ShardId::new(*s).unwrap(), seq: *seq }).collect(),
    }))
}

/// A machine with a 30 s staleness bound, connected, that asked for a proof.
fn asking(seq: u64) -> (DeviceSync, u64) {
    let config = DeviceConfig {
        max_staleness_ms: 30_000,
        freshness_interval_ms: DeviceConfig::freshness_interval_for(30_000),
        ..DeviceConfig::default()
    };
    let mut m = machine_at(seq, config);
    let out = m.handle(T0, DeviceInput::Connected);
    let nonces = freshness_requests(&out);
    assert_eq!(nonces.len(), 1, "{out:?}");
    (m, nonces[0])
}

#[test]
fn a_door_is_stale_until_a_proof_answers_its_own_request() {
    let (mut m, nonce) = asking(4);
    assert!(m.is_stale(T0), "no proof since start");
    // A proof for a nonce the door never sent (a replay) verifies nothing.
    let out = m.handle(T0 + 10, proof(nonce ^ 1, EPOCH, 0, &[("lobby", 4)]).input());
    assert_eq!(rejections(&out), ["unknown_nonce"]);
    assert!(m.is_stale(T0 + 10));
    m.handle(T0 + 20, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
    // Fresh as of the moment the request was sent, not when the proof came.
    assert_eq!(m.fresh_until(), Some(T0 + 30_000));
    assert!(!m.is_stale(T0 + 29_999));
    assert!(m.is_stale(T0 + 30_000));
    // The same proof again is a replay.
    let out = m.handle(T0 + 30, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
    assert_eq!(rejections(&out), ["unknown_nonce"]);
}

#[test]
fn a_connected_door_asks_often_enough_never_to_go_stale() {
    let (mut m, nonce) = asking(4);
    m.handle(T0 + 5, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
    let mut now = T0;
    let mut last_request = T0;
    for _ in 0..20 {
        now = m.next_deadline().unwrap();
        let out = m.handle(now, DeviceInput::Tick);
        for nonce in freshness_requests(&out) {
            last_request = now;
            m.handle(now + 50, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
        }
        assert!(!m.is_stale(now + 50), "at {now}");
    }
    assert!(now > T0 + 60_000, "{now}");
    assert_eq!(m.fresh_until(), Some(last_request + 30_000));
}

#[test]
fn withheld_proofs_make_the_door_stale_after_the_bound() {
    let (mut m, nonce) = asking(4);
    m.handle(T0, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
    // The broker drops everything from now on: requests go out, nothing comes back.
    let mut now = T0;
    while now < T0 + 40_000 {
        now = m.next_deadline().unwrap();
        m.handle(now, DeviceInput::Tick);
    }
    assert!(m.is_stale(T0 + 30_000));
    let out = m.handle(T0 + 40_001, DeviceInput::Tick);
    assert!(statuses(&out).iter().all(|s| s.stale), "{out:?}");
}

#[test]
fn a_door_behind_the_head_is_verified_only_once_it_catches_up() {
    let (mut m, nonce) = asking(4);
    // The centre removed someone at seq 5; the delta was withheld.
    let out = m.handle(T0 + 10, proof(nonce, EPOCH, 0, &[("lobby", 5)]).input());
    assert_eq!(resyncs(&out), vec![4], "asks for what it misses");
    assert!(m.is_stale(T0 + 10), "knowingly behind: not verified");
    // Catching up later verifies it as of the request that showed the head.
    m.handle(T0 + 20_000, down(Down::Deltas(batch(4, 5))).input());
    m.handle(T0 + 20_001, DeviceInput::Applied { shard: lobby(), seq: 5 });
    assert_eq!(m.fresh_until(), Some(T0 + 30_000));
}

#[test]
fn a_door_ahead_of_the_log_is_never_verified() {
    let (mut m, nonce) = asking(9);
    let out = m.handle(T0, proof(nonce, EPOCH, 0, &[("lobby", 4)]).input());
    assert_eq!(rejections(&out), ["ahead_of_log"]);
    assert!(m.is_stale(T0));
}

#[test]
fn staleness_off_is_never_stale() {
    let config = DeviceConfig { max_staleness_ms: 0, ..quiet() };
    let m = machine_at(4, config);
    assert_eq!(m.fresh_until(), None);
    assert!(!m.is_stale(i64::MAX - 1));
}

#[test]
fn a_new_epoch_purges_every_synced_shard_before_anything_is_verified() {
    let (mut m, nonce) = asking(7);
    let out = m.handle(T0, proof(nonce, EPOCH + 1, 0, &[("lobby", 2)]).input());
    assert!(out.contains(&DeviceAction::PurgeShards(vec![lobby()])), "{out:?}");
    assert!(!out.iter().any(|a| matches!(a, DeviceAction::Persist(_))), "persisted only after the purge");
    assert!(m.is_stale(T0));
    // Deltas of the old epoch are refused from now on.
    let out = m.handle(T0 + 1, delta(7, 8).input());
    assert_eq!(rejections(&out), ["wrong_epoch"]);
    let out = m.handle(T0 + 2, DeviceInput::Purged { shards: vec![lobby()] });
    assert!(out.contains(&DeviceAction::Persist(Persisted {
        epoch: EPOCH + 1,
        assignment: Assignment { version: 0, shards: vec![lobby()] },
    })));
    assert_eq!(m.applied_seq(&lobby()), Some(0));
    assert_eq!(m.epoch(), EPOCH + 1);
    assert_eq!(resyncs(&out), vec![0], "fetches the shard anew");
}

#[test]
fn a_failed_purge_keeps_the_door_stale_and_is_tried_again() {
    let (mut m, nonce) = asking(7);
    m.handle(T0, proof(nonce, EPOCH + 1, 0, &[("lobby", 2)]).input());
    let out = m.handle(T0 + 1, DeviceInput::PurgeFailed { shards: vec![lobby()] });
    assert!(!out.iter().any(|a| matches!(a, DeviceAction::PurgeShards(_))));
    assert!(m.is_stale(T0 + 1));
    let retry = m.next_deadline().unwrap();
    assert!(retry <= T0 + 1 + 1_000, "{retry}");
    let out = m.handle(retry, DeviceInput::Tick);
    assert!(out.contains(&DeviceAction::PurgeShards(vec![lobby()])), "{out:?}");
}

#[test]
fn an_assignment_adds_and_drops_shards_and_purges_the_dropped() {
    let mut m = current(4);
    let lab = ShardId::new("lab").unwrap();
    let push = down(Down::Assignment(Assignment { version: 3, shards: vec![lab.clone()] }));
    let out = m.handle(T0 + 1, push.input());
    assert!(out.contains(&DeviceAction::Unsubscribe(vec![topics::shard_delta(&lobby())])), "{out:?}");
    assert!(out.contains(&DeviceAction::Subscribe(vec![topics::shard_delta(&lab)])), "{out:?}");
    assert!(out.contains(&DeviceAction::PurgeShards(vec![lobby()])), "{out:?}");
    assert_eq!(m.shards(), vec![lab.clone()]);
    // Deltas of the dropped shard are refused at once.
    assert_eq!(rejections(&m.handle(T0 + 2, delta(4, 5).input())), ["unassigned_shard"]);
    let out = m.handle(T0 + 3, DeviceInput::Purged { shards: vec![lobby()] });
    assert!(out.contains(&DeviceAction::Persist(Persisted {
        epoch: EPOCH,
        assignment: Assignment { version: 3, shards: vec![lab.clone()] },
    })));
    // The same or an older assignment again (a replay) changes nothing.
    let out = m.handle(T0 + 4, push.input());
    assert_eq!(rejections(&out), ["old_assignment"]);
    let status = m.handle(T0 + 10_000, DeviceInput::Tick);
    let status = statuses(&status);
    assert_eq!(status.last().map(|s| s.assignment), Some(3));
}

#[test]
fn a_proof_carries_the_assignment_for_a_door_that_missed_the_push() {
    let (mut m, nonce) = asking(4);
    let out = m.handle(T0, proof(nonce, EPOCH, 2, &[]).input());
    assert!(out.contains(&DeviceAction::PurgeShards(vec![lobby()])), "{out:?}");
    assert!(m.shards().is_empty());
    assert!(m.is_stale(T0), "stale until the purge is done");
    m.handle(T0 + 1, DeviceInput::Purged { shards: vec![lobby()] });
    assert!(!m.is_stale(T0 + 1), "a door with no shards is fresh as of the proof");
}

#[test]
fn a_key_rollover_signed_by_the_pinned_key_replaces_it() {
    let mut m = current(4);
    let next = SigningKey::from_seed(&[5; 32]).unwrap();
    let out = m.handle(T0, down(Down::KeyRollover { new_key: next.public_key().as_bytes().to_vec() }).input());
    assert_eq!(
        out.iter().filter(|a| matches!(a, DeviceAction::TrustKeys(k) if k == &vec![next.public_key()])).count(),
        1
    );
    // The old key is no longer trusted; the new one is.
    assert_eq!(rejections(&m.handle(T0, delta(4, 5).input())), ["unknown_key"]);
    let signed = encode_signed(&batch(4, 5), &next).unwrap();
    let topic = topics::shard_delta(&lobby());
    let out = m.handle(T0, DeviceInput::Received { topic: &topic, payload: &signed });
    assert_eq!(applies(&out), vec![(4, 5)]);
    // A rollover signed by anyone else is refused.
    let attacker = SigningKey::from_seed(&[6; 32]).unwrap();
    let message = DownMessage {
        device: device_id(),
        sent_at: T0,
        body: Down::KeyRollover { new_key: attacker.public_key().as_bytes().to_vec() },
    };
    let forged = encode_signed(&message, &attacker).unwrap();
    let topic = topics::device_down(&device_id());
    let out = m.handle(T0, DeviceInput::Received { topic: &topic, payload: &forged });
    assert_eq!(rejections(&out), ["unknown_key"]);
}

#[test]
fn every_uplink_is_signed_by_the_device_key() {
    let device_key = signer();
    let public = device_key.public_key();
    let state =
        DeviceState { shards: vec![ShardProgress { shard: lobby(), seq: 0 }], epoch: EPOCH, ..DeviceState::default() };
    let keys = TrustedKeys::new([key().public_key()]);
    let mut m = DeviceSync::new(device_id(), keys, device_key, quiet(), state, status_info(), T0);
    let out = m.handle(T0, DeviceInput::Connected);
    let mut published = 0;
    for action in &out {
        if let DeviceAction::Publish(p) = action {
            published += 1;
            if p.topic.ends_with("/status") {
                crate::codec::decode_device_verified::<DeviceStatus>(&p.payload, &public).unwrap();
            } else {
                crate::codec::decode_device_verified::<UpMessage>(&p.payload, &public).unwrap();
            }
        }
    }
    assert!(published >= 3, "{out:?}");
}

#[test]
fn audit_acknowledgements_of_another_outbox_epoch_are_ignored() {
    let mut m = current(0);
    m.handle(T0, DeviceInput::OutboxChanged { depth: 2 });
    m.handle(T0, DeviceInput::AuditLoaded { events: vec![event(1), event(2)] });
    let out = m.handle(T0, down(Down::AuditAck { epoch: 77, up_to_seq: 2 }).input());
    assert_eq!(rejections(&out), ["wrong_epoch"]);
}

/// Found by the convergence simulation: a proof delayed in the network
/// reached a shard that had moved past its head meanwhile, and was taken for
/// a log gone back. Only a device that was past the head when it *asked* shows
/// a log gone back.
#[test]
fn a_delayed_proof_still_verifies_a_shard_that_moved_on() {
    let (mut m, nonce) = asking(4);
    m.handle(T0 + 1, delta(4, 6).input());
    m.handle(T0 + 2, DeviceInput::Applied { shard: lobby(), seq: 6 });
    let out = m.handle(T0 + 3, proof(nonce, EPOCH, 0, &[("lobby", 5)]).input());
    assert!(rejections(&out).is_empty(), "{out:?}");
    assert_eq!(m.fresh_until(), Some(T0 + 30_000));
}

/// Reported by the server side: the status must not show a new assignment
/// before the shards it dropped are purged, or the centre counts an erasure
/// done by a door that still holds the person.
#[test]
fn the_status_reports_an_assignment_only_once_its_purge_is_done() {
    let mut m = current(4);
    let lab = ShardId::new("lab").unwrap();
    m.handle(T0 + 1, down(Down::Assignment(Assignment { version: 3, shards: vec![lab] })).input());
    let before = statuses(&m.handle(T0 + 10_000, DeviceInput::Tick));
    assert!(before.iter().all(|s| s.assignment == 0), "{before:?}");
    m.handle(T0 + 10_001, DeviceInput::Purged { shards: vec![lobby()] });
    let after = statuses(&m.handle(T0 + 20_000, DeviceInput::Tick));
    assert_eq!(after.last().map(|s| s.assignment), Some(3));
}
