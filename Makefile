# fairsynth: `make demo` (set-up + the main job on the embedded default), `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PYTHONUNBUFFERED := 1

.PHONY: setup demo pipeline downstream test lint format clean-venv

setup: $(STAMP)

# torch: the CPU wheel (torch==2.13.0) where there is no CUDA; never a loose `torch` there,
# which would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA found: installing torch 2.13.0 with CUDA"; \
		$(BIN)/python -m pip install -q torch==2.13.0; \
	else \
		echo "no CUDA: installing the CPU build torch==2.13.0"; \
		$(BIN)/python -m pip install -q torch==2.13.0; \
	fi
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The main job on the embedded default, the whole pipeline with `dvc repro` (DVC skips what is
# up to date): render the biased reference, audit the toy DDPM's bias, train the ADP, generate
# a balanced dataset with quota-driven distribution guidance, verify, publish, report.
demo: $(STAMP)
	dvc repro report
	fairsynth toyfaces show-audit data/audit_model/model_audit.json
	python -m fairsynth.pipeline show

pipeline: demo

# The fair-classifier experiment on the published shards (after `make demo`; its rejection-
# sampled control generates ~9x the samples of the balanced set: ~30 min on a 2-core CPU).
downstream: $(STAMP)
	dvc repro downstream
	python -m fairsynth.downstream --show

test: $(STAMP)
	ruff check .
	pytest -q

lint: $(STAMP)
	ruff check .
	ruff format --check .

format: $(STAMP)
	ruff format .
	ruff check --fix .

clean-venv:
	rm -rf $(VENV)
