//! Integration tests of the protocol crate: one binary (link time).
//!
//! - `roundtrip`: every message kind survives encode → decode (proptest).
//! - `mutations`: mutated valid messages through every decoder and both
//!   state machines — the stable-Rust twin of the `cargo fuzz` targets.
//! - `convergence`: a device and a server machine over a network that drops,
//!   duplicates and reorders; they converge and audit is exactly-once.

// Helpers outside #[test] functions panic on purpose, like the tests.
#![allow(clippy::unwrap_used)]

mod convergence;
mod mutations;
mod roundtrip;
mod strategies;
