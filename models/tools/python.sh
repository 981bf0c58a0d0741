#!/usr/bin/env bash
# Run a models/tools script in the pinned Python environment (CPython 3.11,
# tools/requirements.txt), creating it on first use under
# $FACEGATE_MODELS_CACHE (default: ${XDG_CACHE_HOME:-~/.cache}/facegate-models).
#
#   models/tools/python.sh models/tools/ort_bench.py --model ... (any python args)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${FACEGATE_MODELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/facegate-models}"
mkdir -p "$cache"

py="${PYTHON:-}"
if [ -z "$py" ]; then
    for c in python3.11 python3; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            py="$c"
            break
        fi
    done
fi
[ -n "$py" ] || { echo "python.sh: CPython 3.11 not found (set PYTHON=...)" >&2; exit 1; }

req="$here/requirements.txt"
req_hash="$(sha256sum "$req" | cut -c1-12)"
venv="$cache/venv-py311-$req_hash"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    "$py" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: -r "$req" >&2
    touch "$venv/.complete"
fi

exec "$venv/bin/python" "$@"
