//! The facegate kiosk daemon: camera frames in, door decisions out.
#![forbid(unsafe_code)]

pub mod actuate;
pub mod bench;
pub mod config;
pub mod engine;
pub mod evaluation;
pub mod freshness;
pub use facegate_cli::exit;
pub mod http;
pub mod inspect;
pub mod kiosk;
pub mod liveness;
pub mod metrics;
pub mod runtime;
pub mod service;
pub mod source;
pub mod store;
pub mod sync;
pub mod track;
