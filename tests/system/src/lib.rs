//! End-to-end tests live in `tests/`: they run the workspace's binaries
//! (`facegate-sync-server`, `facegate-daemon`) as real processes on loopback,
//! so they need the whole workspace built (`cargo test --workspace`).
