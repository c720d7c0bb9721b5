#!/usr/bin/env bash
# Install everything, apply specs/ (SmolLM2-135M-Instruct on vLLM's CPU build) and send one
# completion request to the replica. Safe to run again: a second apply changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/enova apply specs/
port=$(.venv/bin/enova status specs/ -o json | .venv/bin/python -c \
  'import json,sys; d=json.load(sys.stdin); print([r["port"] for x in d["deployments"] if x["name"]=="smollm2" for r in x["replica_details"] if r["health"]=="healthy"][0])')
echo "== POST http://127.0.0.1:$port/v1/completions"
curl -sS --fail "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "smollm2", "prompt": "San Francisco is a", "max_tokens": 32, "temperature": 0.9, "top_p": 0.9}'
echo
echo "== done. See it with: .venv/bin/enova status specs/   Stop it with: .venv/bin/enova delete smollm2"
