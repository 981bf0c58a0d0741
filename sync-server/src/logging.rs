//! Logs go to journald when systemd started us (structured fields kept),
//! to stderr otherwise. `RUST_LOG` filters as usual; the default is `info`.
//!
//! The embedded broker's router is silenced whatever the filter: `rumqttd`
//! 0.20 declares its per-message spans with `error_span!` and turns on
//! `tracing`'s `log` feature, so every routed MQTT message would otherwise
//! reach the log as an ERROR record ("[>] incoming", "publish; topic=…").

/// Drops the records of [`SILENCED`] targets, passes the rest to `inner`.
struct Quiet<L>(L);

/// Target prefix of `rumqttd`'s per-message span records.
const SILENCED: &str = "rumqttd::router";

impl<L: log::Log> log::Log for Quiet<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        !metadata.target().starts_with(SILENCED) && self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !record.target().starts_with(SILENCED) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Installs the logger; call once, first thing.
pub fn init() {
    if systemd_journal_logger::connected_to_journal()
        && let Ok(logger) = systemd_journal_logger::JournalLog::new()
        && log::set_boxed_logger(Box::new(Quiet(logger.with_syslog_identifier("facegate-sync-server".into())))).is_ok()
    {
        log::set_max_level(log::LevelFilter::Info);
        return;
    }
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,hnsw_rs=warn,anndists=warn"))
            .format_timestamp_millis()
            .build();
    let level = logger.filter();
    if log::set_boxed_logger(Box::new(Quiet(logger))).is_ok() {
        log::set_max_level(level);
    }
}
