#!/usr/bin/env bash
# GPU smoke test: the tests under the `gpu` marker (tests/engines/test_verl_gpu.py). On one GPU they
# curate 256 toy problems, then train two curriculum stages of 2 verl steps each (GRPO + the SENT
# loss, vLLM rollouts, exact token entropy), the second from the first one's merged weights, and
# print each step's metrics; then curate the 256 problems with vLLM in-process and on Ray Data
# (one ray.data.llm replica) and report how many responses the two share. Without a CUDA GPU, verl
# or vLLM, every test is skipped with the reason.
#
#   scripts/gpu_smoke.sh [MODEL_DIR] [PYTEST_ARGS...]
#
# MODEL_DIR: a local Hugging Face model directory (default: the tests' tiny toy model).
# PYTHON: the interpreter (default: .venv/bin/python when it exists, else python).
# Needs the GPU environment: pip install -e ".[gpu]" (verl 0.9 + vLLM 0.24), or docker/gpu.Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ] && [ -d "$1" ]; then
  SENT_GPU_MODEL_DIR=$(cd "$1" && pwd)
  export SENT_GPU_MODEL_DIR
  shift
fi
# the project's .venv when there is one, else the python on PATH (an activated environment)
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
exec "$PYTHON" -m pytest -m gpu -s -v -rs "$@"
