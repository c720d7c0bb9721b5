#!/usr/bin/env bash
# Install everything (see scripts/setup.sh) and run every test, the slow end-to-end ones with
# the real vLLM CPU engine included. Extra arguments go to one pytest run instead (e.g.
# -m "not slow"), which then replaces the two runs below.
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
if [ $# -gt 0 ]; then
  echo "== tests (pytest $*)"
  exec .venv/bin/python -m pytest --durations=25 "$@"
fi
# Two runs, both always run, and the script fails if either does. The fast tests (no engine,
# no dockerd; with them the `parallel_safe` slow ones, which only wait on Prometheus) run on two
# workers: they mostly wait on sockets, subprocesses and timers. The rest runs alone, one test
# at a time: engines are pinned to cores (enova allocates them from the whole machine), and the
# `serial` tests measure rates and latencies that a neighbour on the other core would disturb.
status=0
parallel=(-n 2)
.venv/bin/python -c 'import xdist' 2>/dev/null || parallel=()  # pytest-xdist missing: one worker
echo "== fast tests (${parallel[*]:-one worker})"
fast="not docker and not serial and (not slow or parallel_safe)"
.venv/bin/python -m pytest --durations=25 "${parallel[@]}" -m "$fast" || status=$?
echo "== the rest (slow, docker and serial tests), one at a time"
.venv/bin/python -m pytest --durations=25 -m "not ($fast)" || status=$((status ? status : $?))
exit "$status"
