//! A site as an operator runs it, as processes on loopback: a MongoDB-protocol
//! server, `facegate-sync-server serve` from a configuration file, the broker
//! (the server's embedded one, or mosquitto configured by the server), and
//! three kiosk daemons on a replayed clip of a person walking up again and
//! again: door-1 and door-2 admit the lobby group, door-3 the lab group.
//!
//! 1. A person enrolled into the lobby reaches door-1 and door-2 within 2 s
//!    and they grant him; door-3 sees him too and never does.
//! 2. Removed, he leaves both lobby galleries within 2 s, and the server
//!    shows every erasure acknowledgement.
//! 3. door-2 is stopped, 50 people are enrolled (the dev set's; without it,
//!    the few photos in the repository), door-2 restarts and catches up to
//!    the server's head: on the embedded-broker site from the delta log; on
//!    the mosquitto site the server keeps its log only 5 s, so the entries
//!    door-2 missed are compacted away and it catches up from a snapshot.
//! 4. The server (and with it the embedded broker; with mosquitto, the
//!    broker too) is killed with SIGKILL in the middle of enrollments; the
//!    kiosks keep deciding offline; after the restart every kiosk converges
//!    on the server's head and every decision is stored once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use facegate_system_tests::{
    Api, Broker, DOORS, Kiosk, Site, audit_seqs_exactly_once, now_ms, people, serial, wait_for,
};
use serde_json::Value;

/// What the issue promises for an enrollment or a removal to reach a door.
const BOUND: Duration = Duration::from_secs(2);
/// Replay rate of every kiosk: three model-running daemons share two cores here.
const FPS: f32 = 6.0;
/// People enrolled while door-2 is away.
const CATCH_UP: usize = 50;

#[test]
fn a_site_on_the_embedded_broker() {
    site(Broker::Embedded);
}

#[test]
fn a_site_on_mosquitto() {
    site(Broker::Mosquitto);
}

/// Polls every kiosk until `done` holds for it; answers how long each took.
/// Gives up after `limit` (the bound is checked by the caller, with the
/// figures in the message).
fn time_until(kiosks: &[&Kiosk], limit: Duration, done: impl Fn(&Kiosk) -> bool) -> Vec<Duration> {
    let started = Instant::now();
    let mut took: Vec<Option<Duration>> = vec![None; kiosks.len()];
    while took.iter().any(Option::is_none) && started.elapsed() < limit {
        for (k, t) in kiosks.iter().zip(took.iter_mut()) {
            if t.is_none() && done(k) {
                *t = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kiosks
        .iter()
        .zip(took)
        .map(|(k, t)| t.unwrap_or_else(|| panic!("{} did not get there within {limit:?}", k.id)))
        .collect()
}

fn grants_of(api: &Api, device: &str, identity: &str) -> Vec<Value> {
    api.audit(device).into_iter().filter(|e| e["decision"] == "grant" && e["identity"] == identity).collect()
}

/// Every shard of the kiosk applied up to the server's head, and its gallery
/// holding exactly the identities of its groups.
fn converged(api: &Api, kiosk: &Kiosk, groups: &[&str]) -> bool {
    let shards = api.device_shards(&kiosk.id);
    let current = shards.iter().all(|(_, applied, head)| *applied == Some(*head));
    current && kiosk.identities() == Some(groups.iter().map(|g| api.group_size(g) as u64).sum())
}

fn site(broker: Broker) {
    let _serial = serial();
    // One site catches door-2 up from the delta log, the other from a snapshot.
    let retention = match broker {
        Broker::Embedded => "",
        Broker::Mosquitto => "log-max-age-secs = 5\ncompact-interval-secs = 1",
    };
    let mut site = Site::provision(&format!("fleet-{broker:?}").to_lowercase(), broker, retention, FPS);
    site.start_kiosks(false);

    // 1. Enrollment: the lobby doors have him within the bound, and grant him.
    let (cap, enrolled_at) = site.enroll_cap_person();
    let Site { kiosks, central, api, .. } = &mut site;
    let lobby_doors = [&kiosks[0], &kiosks[1]];
    let reached = time_until(&lobby_doors, Duration::from_secs(30), |k| k.identities() == Some(1));
    eprintln!("{broker:?}: the enrollment reached door-1 and door-2 after {reached:?}");
    assert!(
        reached.iter().all(|t| *t <= BOUND),
        "an enrollment took longer than {BOUND:?} to reach a door: {reached:?}"
    );
    for kiosk in lobby_doors {
        let grants = wait_for(&format!("{} to grant him", kiosk.id), Duration::from_secs(120), || {
            Some(grants_of(api, &kiosk.id, &cap)).filter(|g| !g.is_empty())
        });
        let first = grants.iter().filter_map(|g| g["at_ms"].as_u64()).min().unwrap();
        eprintln!("{broker:?}: {} granted him {} ms after the enrollment", kiosk.id, first.saturating_sub(enrolled_at));
        assert!(grants.iter().all(|g| g["liveness"] == "live"), "{grants:?}");
    }
    // door-3 sees the same person after the enrollment, and does not know him.
    wait_for("door-3 to decide on him after the enrollment", Duration::from_secs(120), || {
        let seen = api.audit("door-3").iter().any(|e| e["at_ms"].as_u64().is_some_and(|at| at > enrolled_at));
        seen.then_some(())
    });
    assert_eq!(kiosks[2].identities(), Some(0), "door-3 (lab) received a lobby enrollment");
    assert!(grants_of(api, "door-3", &cap).is_empty(), "door-3 granted a person of another group");

    // 2. Removal: gone from both lobby galleries within the bound, every
    //    erasure acknowledged.
    let (status, body) = api.call("DELETE", &format!("/v1/identities/{cap}"), None);
    assert!(status == 200 || status == 204, "forget: {status} {body}");
    let removed_at = now_ms();
    let gone = time_until(&lobby_doors, Duration::from_secs(30), |k| k.identities() == Some(0));
    eprintln!("{broker:?}: the removal reached door-1 and door-2 after {gone:?}");
    assert!(gone.iter().all(|t| *t <= BOUND), "a removal took longer than {BOUND:?} to reach a door: {gone:?}");
    let erasure = wait_for("every erasure acknowledgement", Duration::from_secs(30), || {
        let (status, body) = api.call("GET", &format!("/v1/identities/{cap}/erasure"), None);
        (status == 200 && body["complete"] == true).then_some(body)
    });
    let acknowledged: Vec<&str> =
        erasure["devices"].as_array().unwrap().iter().filter_map(|d| d["device"].as_str()).collect();
    assert!(acknowledged.contains(&"door-1") && acknowledged.contains(&"door-2"), "{erasure}");

    // 3. door-2 away while 50 people are enrolled; back, it catches up.
    let mut everyone = people().into_iter();
    kiosks[1].stop();
    let wanted = CATCH_UP.min(everyone.len() / 2);
    let mut enrolled = 0;
    for (name, photo) in everyone.by_ref() {
        let (status, body) = api.enroll(&name, "lobby", &[photo]);
        match status {
            201 => enrolled += 1,
            // A photo the pipeline refuses, or a face already enrolled: skipped, said.
            409 | 422 => eprintln!("{name}: {status} {}", body["detail"]),
            other => panic!("enrolling {name}: {other} {body}"),
        }
        if enrolled == wanted {
            break;
        }
    }
    assert_eq!(enrolled, wanted, "the data set ran out of enrollable people");
    let snapshots = central.sync_event("snapshot_sent");
    if broker == Broker::Mosquitto {
        // Everything door-2 missed ages out of the log (the lab's log is
        // still empty: every entry compacted so far is the lobby's).
        let head = api.device_shards("door-2").iter().map(|(_, _, head)| *head).sum::<u64>();
        wait_for("the lobby's log to be compacted to its head", Duration::from_secs(60), || {
            (central.sync_event("delta_entries_compacted") >= head).then_some(())
        });
    }
    let started = Instant::now();
    kiosks[1].start();
    wait_for("door-2 to catch up with the lobby", Duration::from_secs(300), || {
        converged(api, &kiosks[1], &["lobby"]).then_some(())
    });
    let by_snapshot = central.sync_event("snapshot_sent") > snapshots;
    assert_eq!(by_snapshot, broker == Broker::Mosquitto, "door-2 caught up by snapshot: {by_snapshot}");
    eprintln!(
        "{broker:?}: door-2 caught up on {enrolled} enrollments {:?} after its restart ({})",
        started.elapsed(),
        if by_snapshot { "snapshot" } else { "delta log" }
    );

    // 4. SIGKILL in the middle of enrollments; the doors keep deciding.
    let rest: Vec<(String, std::path::PathBuf)> = everyone.collect();
    let accepted = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (api, accepted) = (api.clone(), Arc::clone(&accepted));
        std::thread::spawn(move || {
            for (i, (name, photo)) in rest.into_iter().enumerate() {
                let group = if i % 2 == 0 { "lab" } else { "lobby" };
                match api.try_enroll(&name, group, &[photo]) {
                    Ok((201, _)) => {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => return, // the server is gone
                }
            }
        })
    };
    wait_for("two enrollments before the kill", Duration::from_secs(120), || {
        (accepted.load(Ordering::SeqCst) >= 2).then_some(())
    });
    let before: Vec<u64> = kiosks.iter().map(|k| k.decisions().unwrap()).collect();
    central.kill_server();
    if broker == Broker::Mosquitto {
        central.kill_broker();
    }
    traffic.join().unwrap();
    for (kiosk, before) in kiosks.iter().zip(&before) {
        wait_for(&format!("{} to decide offline", kiosk.id), Duration::from_secs(120), || {
            let offline = kiosk.metric("facegate_sync_connected") == Some(0.0);
            let queued = kiosk.metric("facegate_outbox_depth").is_some_and(|d| d >= 1.0);
            (offline && queued && kiosk.decisions().unwrap_or(0) > *before).then_some(())
        });
    }
    central.start_server();
    central.start_broker();
    let started = Instant::now();
    for (kiosk, (_, groups)) in kiosks.iter().zip(&DOORS) {
        wait_for(&format!("{} to converge after the restart", kiosk.id), Duration::from_secs(300), || {
            converged(api, kiosk, groups).then_some(())
        });
    }
    eprintln!(
        "{broker:?}: after the SIGKILL ({} enrollments accepted around it) every door converged {:?} after the restart",
        accepted.load(Ordering::SeqCst),
        started.elapsed()
    );

    // Every decision stored once: drain, stop, count and compare seqs.
    for kiosk in kiosks.iter_mut() {
        wait_for(&format!("{}'s outbox to drain", kiosk.id), Duration::from_secs(120), || {
            (kiosk.metric("facegate_outbox_depth") == Some(0.0)).then_some(())
        });
        let made = kiosk.decisions().unwrap();
        kiosk.stop();
        let stored = audit_seqs_exactly_once(api, &kiosk.id).len() as u64;
        assert!(stored >= made, "{}: {made} decisions made, {stored} stored", kiosk.id);
        eprintln!("{broker:?}: {} — {stored} decisions, each stored once", kiosk.id);
    }
    assert!(grants_of(api, "door-3", &cap).is_empty(), "door-3 granted a person of another group");
    for door in ["door-1", "door-2"] {
        let late: Vec<Value> = grants_of(api, door, &cap)
            .into_iter()
            .filter(|g| g["at_ms"].as_u64().is_some_and(|at| at > removed_at + BOUND.as_millis() as u64))
            .collect();
        assert!(late.is_empty(), "{door} granted a removed person: {late:?}");
    }
}
