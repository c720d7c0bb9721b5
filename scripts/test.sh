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
# Every run below always runs, and the script fails if any does. The fast tests (no engine, no
# dockerd; with them the `parallel_safe` slow ones, which only wait on Prometheus) run on two
# workers: they mostly wait on sockets, subprocesses and timers. The slow and docker tests then
# run in two lanes at once, each one test at a time: the `one_core` tests (one replica of one core
# at most, ports of their own) pinned to the last core with taskset, so enova gives their engines
# that core, and the others (two replicas, dockerd) on every core. An engine's start is mostly one
# core's work, so two lanes finish in about the time of the longer one. The `serial` tests, which
# measure rates and latencies that a neighbour would disturb, run last, alone.
status=0
parallel=(-n 2)
.venv/bin/python -c 'import xdist' 2>/dev/null || parallel=()  # pytest-xdist missing: one worker
echo "== fast tests (${parallel[*]:-one worker})"
fast="not docker and not serial and (not slow or parallel_safe)"
.venv/bin/python -m pytest --durations=25 "${parallel[@]}" -m "$fast" || status=$?
keep() { status=$((status ? status : $1)); }

rest="not ($fast) and not serial"
temp=$(mktemp -d)
last_core=$(.venv/bin/python -c 'import os; print(max(os.sched_getaffinity(0)))')
cores=$(.venv/bin/python -c 'import os; print(len(os.sched_getaffinity(0)))')
# the one-core lane's own gateway port, replica ports and reconciler metrics port
lane=(env ENOVA_TEST_GATEWAY_PORT=19288 ENOVA_TEST_PORT_RANGE=19680-19699 ENOVA_RECONCILER_METRICS_PORT=19189)
narrow=(.venv/bin/python -m pytest --durations=15 -p no:cacheprovider --basetemp "$temp/one-core" -m "$rest and one_core")
wide=(.venv/bin/python -m pytest --durations=25 -p no:cacheprovider --basetemp "$temp/wide" -m "$rest and not one_core")
if [ "$cores" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
  echo "== slow and docker tests in two lanes: one_core pinned to core $last_core (its output follows the other's), the rest on all cores"
  "${lane[@]}" taskset -c "$last_core" "${narrow[@]}" >"$temp/one-core.log" 2>&1 &
  narrow_pid=$!
  "${wide[@]}" || keep $?
  narrow_status=0
  wait "$narrow_pid" || narrow_status=$?
  echo "== the one_core lane (pinned to core $last_core)"
  cat "$temp/one-core.log"
  keep "$narrow_status"
else
  echo "== slow and docker tests, one lane (fewer than 2 cores or no taskset)"
  "${lane[@]}" "${narrow[@]}" || keep $?
  "${wide[@]}" || keep $?
fi
echo "== serial tests, alone"
.venv/bin/python -m pytest --durations=10 -p no:cacheprovider -m "not ($fast) and serial" || keep $?
rm -rf "$temp"
exit "$status"
