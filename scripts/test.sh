#!/usr/bin/env bash
# Install everything (see scripts/setup.sh) and run every test, the slow end-to-end ones with
# the real vLLM CPU engine included. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Debian packages the tests drive for real: systemd-analyze verifies the systemd unit; chromium
# renders the injection report headless (with a font for its text); prometheus serves the
# autoscaler's Prometheus source in its test; docker.io gives the dockerd the Docker runtime's
# tests start for themselves (tests/docker/engine.py).
missing=()
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing ${missing[*]} (Debian)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
    || echo "note: could not install ${missing[*]}; the tests that need them say so and skip"
fi
echo "== import layers (import-linter)"
.venv/bin/lint-imports
echo "== tests"
exec .venv/bin/python -m pytest --durations=25 "$@"
