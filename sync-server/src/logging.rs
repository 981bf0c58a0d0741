//! Logs go to journald when systemd started us (structured fields kept),
//! to stderr otherwise. `RUST_LOG` filters as usual; the default is `info`.

/// Installs the logger; call once, first thing.
pub fn init() {
    if systemd_journal_logger::connected_to_journal()
        && let Ok(logger) = systemd_journal_logger::JournalLog::new()
        && logger.with_syslog_identifier("facegate-sync-server".into()).install().is_ok()
    {
        log::set_max_level(log::LevelFilter::Info);
        return;
    }
    let _ =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,hnsw_rs=warn,anndists=warn"))
            .format_timestamp_millis()
            .try_init();
}
