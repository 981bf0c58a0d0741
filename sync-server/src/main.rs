//! `facegate-sync-server`: the central server (admin API, enrollment,
//! de-duplication, master index, MQTT sync). Its features land with the
//! central-server issue; until then it only reports its version.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "facegate-sync-server", version, about = "facegate central sync server")]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
