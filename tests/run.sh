#!/usr/bin/env bash
# The whole facegate test suite. Works on a fresh Debian/Ubuntu machine with
# only Rust installed: anything else it needs it installs (with apt-get, as
# root or through sudo) or fetches itself.
#
#   tests/run.sh            unit, integration, system and doc tests, benches in test mode
#
# Build outputs go to $CARGO_TARGET_DIR, by default a directory outside the
# clone (~/.cache/facegate/target) so later runs reuse it (tests/target-dir.sh).
# The dev-set accuracy tests run when ../shared/data/faces exists (or
# FACEGATE_DATA points at a data directory); a fresh clone skips them and says so.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tests/setup.sh
. tests/target-dir.sh

if [ -z "${FACEGATE_DATA:-}" ] && [ -d "$root/../shared/data" ]; then
    export FACEGATE_DATA="$root/../shared/data"
fi
if [ -n "${FACEGATE_DATA:-}" ]; then
    echo "tests/run.sh: dev-set tests use $FACEGATE_DATA"
else
    echo "tests/run.sh: no shared data set (../shared/data); dev-set accuracy tests will be skipped"
fi

echo "tests/run.sh: building and running the test suite (target dir $CARGO_TARGET_DIR)"
cargo test --workspace --all-targets --locked --no-fail-fast
cargo test --workspace --doc --locked
echo "tests/run.sh: all tests passed"
