# Sourced by tests/run.sh and tests/demo.sh: the shared build directory.
#
# Build outputs go to $CARGO_TARGET_DIR, by default a directory outside the
# clone (~/.cache/facegate/target), so later runs reuse it. Cargo keys the
# workspace crates' artifacts by their path *inside* the workspace, so a
# clone elsewhere on the same machine finds them fresh and reuses them; but
# they embed the absolute source path they were built from
# (CARGO_MANIFEST_DIR: models, fixtures), which would then point at the
# other clone. When the directory was last built from another clone, the
# workspace crates (not the dependencies) are rebuilt.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/facegate/target}"
mkdir -p "$CARGO_TARGET_DIR"
facegate_stamp="$CARGO_TARGET_DIR/facegate-source-root"
if [ -d "$CARGO_TARGET_DIR/debug" ] && [ "$(cat "$facegate_stamp" 2>/dev/null)" != "$root" ]; then
    echo "tests: $CARGO_TARGET_DIR was last built from $(cat "$facegate_stamp" 2>/dev/null || echo "an unknown clone"); rebuilding the workspace crates"
    cargo clean --quiet -p facegate-face -p facegate-protocol -p facegate-daemon -p facegate-sync-server -p facegate-system-tests
fi
printf '%s\n' "$root" > "$facegate_stamp"
