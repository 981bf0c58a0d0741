//! Keeps the sync task running: [`shell::run`] ends on any store or file
//! error met while carrying out an action (a full disk, a failing card);
//! the supervisor restarts it with exponential backoff (1 s doubling to
//! 60 s, back to 1 s after a run that lasted a minute), logs every failure at
//! ERROR with its cause, counts it (`facegate_sync_restarts_total`), and
//! while sync is down clears the `connected` flag, sets
//! `facegate_sync_connected` to 0 and withholds readiness (`/ready`
//! condition `sync`).
//!
//! A setup error that cannot heal by itself (the provisioning files became
//! unusable, a TLS file is wrong, the command log is corrupt) does not spin:
//! it is logged at ERROR once (again only when it changes) and retried every
//! 60 s, so a technician's repair is picked up without a restart. A device
//! wiped by the server stops syncing for good: the supervisor returns.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::SyncError;
use super::shell::{self, SyncContext};
use crate::http::Readiness;

/// The readiness condition that is down while sync is.
pub const SYNC_CONDITION: &str = "sync";

/// Restart delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    /// A run that lasted this long resets the delay to `min`.
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { min: Duration::from_secs(1), max: Duration::from_secs(60), healthy_after: Duration::from_secs(60) }
    }
}

impl SyncError {
    /// Whether retrying soon cannot help: only a person can fix it.
    pub fn needs_an_operator(&self) -> bool {
        match self {
            Self::Provision(_) | Self::Tls(_) | Self::Corrupt(_) | Self::SigningKey { .. } => true,
            Self::Io { .. } | Self::Store(_) | Self::Task(_) | Self::Random => false,
        }
    }
}

/// Runs [`shell::run`] under supervision until `ctx.shutdown` is set or the
/// device is wiped.
pub async fn supervise(ctx: SyncContext, readiness: Option<Readiness>) {
    supervise_with(ctx, readiness, Backoff::default(), shell::run).await;
}

/// [`supervise`] with its backoff and the task to run given (for tests).
pub async fn supervise_with<F, Fut>(ctx: SyncContext, readiness: Option<Readiness>, backoff: Backoff, mut run: F)
where
    F: FnMut(SyncContext) -> Fut,
    Fut: Future<Output = Result<(), SyncError>>,
{
    let set_ready = |up: bool| {
        if let Some(readiness) = &readiness {
            readiness.set_condition(SYNC_CONDITION, up);
        }
    };
    let mut delay = backoff.min;
    let mut last_permanent: Option<String> = None;
    while !ctx.shutdown.load(Ordering::Relaxed) {
        set_ready(true);
        let started = tokio::time::Instant::now();
        let result = run(ctx.clone()).await;
        set_ready(false);
        ctx.connected.store(false, Ordering::Relaxed);
        if let Some(metrics) = &ctx.metrics {
            metrics.sync_connected.set(0);
        }
        if ctx.shutdown.load(Ordering::Relaxed) {
            return;
        }
        if started.elapsed() >= backoff.healthy_after {
            delay = backoff.min;
        }
        let wait = match result {
            Ok(()) if shell::is_wiped(&ctx.dir) => {
                log::warn!("sync is off for good: the server wiped this device; provision it again to sync");
                return;
            }
            Ok(()) => {
                log::error!(retry_in_ms = delay.as_millis() as u64; "sync stopped unexpectedly; restarting");
                next(&mut delay, backoff.max)
            }
            Err(error) if error.needs_an_operator() => {
                let cause = causes(&error);
                if last_permanent.as_deref() != Some(cause.as_str()) {
                    log::error!(error = cause.as_str(), retry_in_ms = backoff.max.as_millis() as u64; "sync cannot start until this is fixed; retrying slowly");
                    last_permanent = Some(cause);
                } else {
                    log::debug!(error = cause.as_str(); "sync still cannot start");
                }
                backoff.max
            }
            Err(error) => {
                last_permanent = None;
                log::error!(error = causes(&error).as_str(), retry_in_ms = delay.as_millis() as u64; "sync failed; restarting it (the door decides from the gallery it has)");
                next(&mut delay, backoff.max)
            }
        };
        if let Some(metrics) = &ctx.metrics {
            metrics.sync_restarts.inc();
        }
        sleep_unless_shutdown(&ctx, wait).await;
    }
}

/// The current delay; doubles it for next time, up to `max`.
fn next(delay: &mut Duration, max: Duration) -> Duration {
    let now = *delay;
    *delay = (*delay * 2).min(max);
    now
}

async fn sleep_unless_shutdown(ctx: &SyncContext, wait: Duration) {
    let until = tokio::time::Instant::now() + wait;
    while !ctx.shutdown.load(Ordering::Relaxed) && tokio::time::Instant::now() < until {
        tokio::time::sleep_until(until.min(tokio::time::Instant::now() + Duration::from_millis(250))).await;
    }
}

/// The error and its sources, each once.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[path = "supervise_tests.rs"]
mod tests;
