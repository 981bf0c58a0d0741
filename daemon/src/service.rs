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
/// stderr otherwise.
pub fn init_logging(level: log::LevelFilter) -> LogTarget {
    let target = if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => match journal.with_syslog_identifier("facegate-daemon".into()).install() {
                Ok(()) => Some(LogTarget::Journal),
                Err(_) => None,
            },
            Err(_) => None,
        }
    } else {
        None
    };
    let target = target.unwrap_or_else(|| {
        let _ = env_logger::Builder::new()
            .filter_level(level)
            .parse_env("FACEGATE_LOG")
            .format_timestamp_millis()
            .try_init();
        LogTarget::Stderr
    });
    log::set_max_level(level);
    target
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
