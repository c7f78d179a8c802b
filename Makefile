# One venv (.venv) with everything the project needs on this machine.
# `make test` and `make bench` create it when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sent-installed
# On a CPU-only machine, torch 2.13.0 first: pip takes the local CPU build instead of a
# multi-GB CUDA wheel. Override on a GPU host, e.g. `make setup TORCH_SPEC=torch==2.11.0`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test lint bench demo clean-venv

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
	$(BIN)/hadolint --failure-threshold info docker/*.Dockerfile
	$(BIN)/shellcheck scripts/*.sh

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The main job on the embedded default (toy world, CPU), as the Prefect pipeline flow with MLflow
# tracking: bootstrap -> curate -> train stages 1-2 -> evaluate (starting model and final stage).
# An ephemeral Prefect server unless PREFECT_API_URL is set; MLflow in data/mlflow.db unless
# MLFLOW_TRACKING_URI is set. Bootstrap and curation are cached; every demo trains a new run.
demo: $(STAMP)
	$(BIN)/sent pipeline --config configs/toy.yaml

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
