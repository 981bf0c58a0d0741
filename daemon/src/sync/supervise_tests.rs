//! The supervisor with short delays: restarts, backoff, metrics, readiness
//! and the connected flag. Timings are checked as lower bounds only.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;

use super::*;
use crate::metrics::Metrics;
use crate::store::{GalleryModel, StoreConfig};

fn context(root: &std::path::Path, metrics: Metrics) -> SyncContext {
    let key_path = root.join("device.key");
    let config = StoreConfig::new(root.join("db"), GalleryModel { id: "test-model".into(), dim: 4 });
    let shard = crate::store::open_with_key_file(&config, &key_path).unwrap();
    let dir = root.join("sync");
    std::fs::create_dir_all(&dir).unwrap();
    SyncContext {
        dir,
        shard: Arc::new(shard),
        key_path,
        model_id: "test-model".into(),
        outbox: Arc::default(),
        metrics: Some(metrics),
        shutdown: Arc::default(),
        connected: Arc::default(),
        config: Default::default(),
        freshness: crate::freshness::FreshnessGate::off(),
    }
}

fn disk_full() -> SyncError {
    let full = std::io::Error::from_raw_os_error(28);
    SyncError::Store(crate::store::StoreError::Write { source: sled::Error::Io(full) })
}

const QUICK: Backoff =
    Backoff { min: Duration::from_millis(40), max: Duration::from_millis(320), healthy_after: Duration::from_secs(60) };

#[tokio::test]
async fn a_sync_task_that_fails_is_restarted_with_backoff_and_reported_down_meanwhile() {
    let root = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ctx = context(root.path(), metrics.clone());
    let readiness = Readiness::waiting_for(&["models"]);
    readiness.set("models", true);
    let starts = Arc::new(Mutex::new(Vec::new()));
    let begin = tokio::time::Instant::now();
    let seen = Arc::clone(&starts);
    let observed_readiness = readiness.clone();
    let supervisor = tokio::spawn(supervise_with(ctx.clone(), Some(readiness.clone()), QUICK, move |ctx| {
        let seen = Arc::clone(&seen);
        let readiness = observed_readiness.clone();
        async move {
            let attempt = {
                let mut seen = seen.lock().unwrap();
                seen.push(begin.elapsed());
                seen.len()
            };
            assert!(readiness.report().0, "readiness is withheld while sync runs");
            // Up as a real session would be, then a store error in an action.
            ctx.connected.store(true, Ordering::Relaxed);
            ctx.metrics.as_ref().unwrap().sync_connected.set(1);
            if attempt <= 4 {
                return Err(disk_full());
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    }));
    while metrics.sync_restarts.get() == 0 {
        assert!(begin.elapsed() < Duration::from_secs(20), "never restarted");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Down between the first failure and the first restart (40 ms).
    assert!(!ctx.connected.load(Ordering::Relaxed));
    assert_eq!(metrics.sync_connected.get(), 0);
    assert!(!readiness.report().0);
    assert_eq!(metrics.sync_restarts.get(), 1);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while starts.lock().unwrap().len() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "not restarted: {:?}", starts.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let starts = starts.lock().unwrap().clone();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, least) in gaps.iter().zip([40, 80, 160, 320]) {
        assert!(*gap >= Duration::from_millis(least), "restart delays {gaps:?} do not double from 40 ms");
    }
    assert_eq!(metrics.sync_restarts.get(), 4);
    assert!(readiness.report().0, "sync runs again");
    assert!(crate::metrics::render(&registry).contains("facegate_sync_restarts_total 4"));

    ctx.shutdown.store(true, Ordering::Relaxed);
    supervisor.abort();
}

#[tokio::test]
async fn a_setup_error_that_cannot_heal_is_retried_at_the_longest_delay_not_in_a_loop() {
    let root = tempfile::tempdir().unwrap();
    let metrics = Metrics::register(&mut Registry::default());
    let ctx = context(root.path(), metrics.clone());
    let calls = Arc::new(Mutex::new(0u32));
    let counted = Arc::clone(&calls);
    let supervisor = tokio::spawn(supervise_with(ctx.clone(), None, QUICK, move |ctx| {
        *counted.lock().unwrap() += 1;
        async move { Err(SyncError::Provision(super::super::ProvisionError::NotProvisioned(ctx.dir.clone()))) }
    }));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let calls = *calls.lock().unwrap();
    assert!((2..=3).contains(&calls), "{calls} attempts in 800 ms: at most one per 320 ms");
    ctx.shutdown.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(supervisor.is_finished(), "shutdown ends the supervisor while it waits");
}

#[tokio::test]
async fn a_device_wiped_by_the_server_is_not_restarted() {
    let root = tempfile::tempdir().unwrap();
    let metrics = Metrics::register(&mut Registry::default());
    let ctx = context(root.path(), metrics.clone());
    std::fs::write(ctx.dir.join("wiped"), b"wiped\n").unwrap();
    let readiness = Readiness::waiting_for(&["models"]);
    readiness.set("models", true);
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    supervise_with(ctx.clone(), Some(readiness.clone()), QUICK, move |_| {
        flag.store(true, Ordering::Relaxed);
        async { Ok(()) }
    })
    .await;
    assert!(ran.load(Ordering::Relaxed));
    assert_eq!(metrics.sync_restarts.get(), 0);
    assert!(!readiness.report().0, "a wiped device reports sync down");
}
