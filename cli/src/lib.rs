//! What facegate's binaries (`facegate-daemon`, `facegate-sync-server`)
//! share as processes: their exit statuses ([`exit`]), how a bad command
//! line ends ([`parse_args`]), and the `FACEGATE__SECTION__KEY` overrides of
//! their TOML configuration ([`env`]), and the system users a process
//! started as root hands its files to ([`users`]).

pub mod env;
pub mod exit;
pub mod users;

use std::process::ExitCode;

/// Parses the command line. `--help` and `--version` print and end with
/// success, anything clap refuses prints its message and ends with
/// [`exit::USAGE`]: the `Err` is the status to return from `main`.
pub fn parse_args<C: clap::Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| {
        let _ = e.print();
        match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
            _ => ExitCode::from(exit::USAGE),
        }
    })
}
