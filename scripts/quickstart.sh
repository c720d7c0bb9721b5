#!/usr/bin/env bash
# Install everything, then `enova pilot run` on the embedded default: SmolLM2-135M-Instruct on vLLM's
# CPU build behind the gateway on :9199, Prometheus, the app server on :8182/instance and the chat web
# UI on :8501. Once the model answers, send the seed's own request. Ctrl-C (or `.venv/bin/enova pilot
# stop` from another shell) stops everything pilot started; the specs in ./enova-pilot/ stay.
# Extra arguments go to `enova pilot run` (e.g. --model ORG/NAME --hf_proxy URL --max-num-seqs 8).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/enova pilot run "$@" &
pilot=$!
trap 'kill -INT "$pilot" 2>/dev/null || true; wait "$pilot"' INT TERM
until curl -sf http://127.0.0.1:9199/health >/dev/null; do
  kill -0 "$pilot" 2>/dev/null || { wait "$pilot"; exit $?; }
  sleep 1
done
sleep 1  # pilot prints its URLs as the gateway turns healthy
echo "== curl -X POST http://localhost:9199/generate -d '{\"prompt\": \"San Francisco is a\", ...}'"
curl -sS --fail -X POST http://localhost:9199/generate \
  -d '{"prompt": "San Francisco is a", "max_tokens": 64, "temperature": 0.9, "top_p": 0.9}'
echo
echo "== pilot keeps serving; Ctrl-C (or .venv/bin/enova pilot stop) stops everything it started"
wait "$pilot"
