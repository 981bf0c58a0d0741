//! Living under systemd: logs to journald when started by systemd (stderr
//! otherwise), `READY=1` once models, gallery and the first frame are in,
//! `STATUS=` one-line summaries, and `WATCHDOG=1` only while the pipeline
//! makes progress — a stalled pipeline is restarted by systemd.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Journal,
    Stderr,
}

/// Installs the logger: journald when our stderr is connected to the
/// journal (systemd sets `JOURNAL_STREAM`) and the journal accepts us,
/// stderr otherwise. What is logged: `FACEGATE_LOG`, else `RUST_LOG`, in
/// env_logger's syntax (`debug`, `facegate_daemon::sync=trace,info`), else
/// `level`; a setting that does not parse is reported and `level` kept.
pub fn init_logging(level: log::LevelFilter) -> LogTarget {
    let spec = log_spec(std::env::var("FACEGATE_LOG").ok(), std::env::var("RUST_LOG").ok());
    let (filter, refused) = log_filter(level, spec.as_ref());
    let max = filter.filter();
    let target = if systemd_journal_logger::connected_to_journal() {
        systemd_journal_logger::JournalLog::new()
            .ok()
            .map(|journal| journal.with_syslog_identifier("facegate-daemon".into()))
            .and_then(|journal| log::set_boxed_logger(Box::new(env_filter::FilteredLog::new(journal, filter))).ok())
            .map(|()| LogTarget::Journal)
    } else {
        None
    };
    let target = target.unwrap_or_else(|| {
        let mut builder = env_logger::Builder::new();
        builder.filter_level(level).format_timestamp_millis();
        if refused.is_none()
            && let Some((_, spec)) = &spec
        {
            builder.parse_filters(spec);
        }
        let _ = builder.try_init();
        LogTarget::Stderr
    });
    log::set_max_level(max);
    if let (Some((variable, spec)), Some(error)) = (&spec, refused) {
        log::warn!(variable, value = spec.as_str(), error = error.as_str(), level:% = level; "log filter not understood; logging at the default level");
    }
    target
}

/// The log filter setting and where it came from: `FACEGATE_LOG` wins over
/// `RUST_LOG`; empty values count as unset.
fn log_spec(facegate_log: Option<String>, rust_log: Option<String>) -> Option<(&'static str, String)> {
    let set = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    set(facegate_log).map(|v| ("FACEGATE_LOG", v)).or_else(|| set(rust_log).map(|v| ("RUST_LOG", v)))
}

/// `level`, refined by the setting when it parses (else the parse error).
fn log_filter(level: log::LevelFilter, spec: Option<&(&str, String)>) -> (env_filter::Filter, Option<String>) {
    let mut builder = env_filter::Builder::new();
    builder.filter_level(level);
    let refused = spec.and_then(|(_, spec)| builder.try_parse(spec).err().map(|e| e.to_string()));
    if refused.is_some() {
        builder = env_filter::Builder::new();
        builder.filter_level(level);
    }
    (builder.build(), refused)
}

/// Progress the pipeline reports and the watchdog checks.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    frames: Arc<AtomicU64>,
    status: Arc<Mutex<String>>,
    ready: Arc<AtomicBool>,
}

impl Progress {
    /// One more frame went through the pipeline.
    pub fn tick(&self) {
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Replaces the one-line status shown by `systemctl status`.
    pub fn set_status(&self, status: String) {
        if let Ok(mut s) = self.status.lock() {
            *s = status;
        }
    }

    fn status(&self) -> String {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Tells systemd the service is ready (once).
    pub fn ready(&self) {
        if !self.ready.swap(true, Ordering::SeqCst) {
            let status = self.status();
            let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
            log::info!(status = status.as_str(); "ready");
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// Tells systemd we are stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Starts the watchdog thread when systemd asked for one (`WatchdogSec=`):
/// it pings at half the interval, but only if frames were processed since
/// the last ping — or the service is still starting, or the camera is being
/// reconnected (`waiting_for_source`: the pipeline is not stalled then, the
/// camera is gone, and health and metrics say so; restarting would not help).
pub fn start_watchdog(
    progress: Progress,
    waiting_for_source: impl Fn() -> bool + Send + 'static,
    stop: Arc<AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let period = (interval / 2).max(Duration::from_millis(100));
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut last = progress.frames();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(period);
                let now = progress.frames();
                let status = progress.status();
                if now != last || !progress.is_ready() || waiting_for_source() {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                } else {
                    log::error!(frames = now; "pipeline stalled: no frame processed, withholding the watchdog ping");
                }
                last = now;
            }
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facegate_log_wins_over_rust_log_and_raises_the_level_past_info() {
        let spec = log_spec(Some("debug".into()), Some("trace".into()));
        assert_eq!(spec, Some(("FACEGATE_LOG", "debug".to_owned())));
        let (filter, refused) = log_filter(log::LevelFilter::Info, spec.as_ref());
        assert_eq!((filter.filter(), refused), (log::LevelFilter::Debug, None));
        let spec = log_spec(Some(" ".into()), Some("facegate_daemon::sync=trace,warn".into()));
        assert_eq!(spec.as_ref().map(|(v, _)| *v), Some("RUST_LOG"));
        let (filter, _) = log_filter(log::LevelFilter::Info, spec.as_ref());
        assert_eq!(filter.filter(), log::LevelFilter::Trace);
        assert_eq!(log_spec(None, None), None);
        assert_eq!(log_filter(log::LevelFilter::Warn, None).0.filter(), log::LevelFilter::Warn);
    }

    #[test]
    fn a_log_filter_that_does_not_parse_keeps_the_default_and_says_why() {
        let spec = Some(("FACEGATE_LOG", "facegate_daemon=loud".to_owned()));
        let (filter, refused) = log_filter(log::LevelFilter::Info, spec.as_ref());
        assert_eq!(filter.filter(), log::LevelFilter::Info);
        assert!(refused.is_some_and(|e| !e.is_empty()));
    }
}
