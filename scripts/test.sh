#!/usr/bin/env bash
# Install everything (see scripts/setup.sh) and run every test, the slow end-to-end ones with
# the real vLLM CPU engine included. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The systemd unit is checked with systemd-analyze verify; Debian's systemd package provides it.
if ! command -v systemd-analyze >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq systemd) >/dev/null 2>&1 || echo "note: could not install systemd-analyze"
fi
echo "== import layers (import-linter)"
.venv/bin/lint-imports
echo "== tests"
exec .venv/bin/python -m pytest "$@"
