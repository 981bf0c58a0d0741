//! `facegate-sync-server`: the central server — admin API, enrollment with
//! de-duplication, the master vector index, MongoDB as the system of record.
//!
//! The MQTT sync (publishing deltas, ingesting audit, provisioning) plugs in
//! through the store's functions: [`store::Store::append_deltas`],
//! [`store::Store::read_deltas_after`], [`store::Store::store_audit_batch`],
//! [`store::Store::record_device_applied`], [`store::Store::shard_snapshot`],
//! [`store::Store::redeem_provisioning_token`], and a readiness dependency
//! ([`readiness::Readiness::register`]) for the broker connection.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod devdb;
pub mod engine;
pub use facegate_cli::exit;
pub mod faces;
pub mod import;
pub mod index;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod readiness;
pub mod server;
pub mod store;
pub mod sync;
