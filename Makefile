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

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The main job on the embedded default (toy world, CPU): bootstrap -> curate -> train stages 1-2 -> evaluate.
# Bootstrap and curation are cached; every demo run trains into a new run directory.
# (The Prefect pipeline will take this over; until then the phases run through the CLI.)
# expanded once (:=), so that every step of one demo uses the same directory
ifndef DEMO_RUN
DEMO_RUN := data/runs/demo-$(shell date +%Y%m%d-%H%M%S)
endif
demo: $(STAMP)
	$(BIN)/sent toy bootstrap
	$(BIN)/sent curate --config configs/toy.yaml
	$(BIN)/sent train --config configs/toy.yaml --stage 1 --out $(DEMO_RUN)
	$(BIN)/sent train --config configs/toy.yaml --stage 2 --out $(DEMO_RUN)
	$(BIN)/sent eval --config configs/toy.yaml --model data/models/toy --benchmarks toy --out $(DEMO_RUN)/eval-bootstrap
	$(BIN)/sent eval --config configs/toy.yaml --model $(DEMO_RUN)/stage-2/final --benchmarks toy --out $(DEMO_RUN)/eval-final
	@echo "demo done: curriculum under data/runs/curate-*, stages and evaluations in $(DEMO_RUN)"

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
