#!/usr/bin/env bash
# Install everything (see scripts/setup.sh) and run every test, the slow end-to-end ones with
# the real vLLM CPU engine included. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== import layers (import-linter)"
.venv/bin/lint-imports
echo "== tests"
exec .venv/bin/python -m pytest "$@"
