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

.PHONY: setup demo pipeline test lint format clean-venv

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

# The main job on the embedded default: render the biased reference dataset, sample the toy
# DDPM and print its bias report (DVC skips what is up to date).
demo: $(STAMP)
	dvc repro audit_model
	fairsynth toyfaces show-audit data/audit_model/model_audit.json

# The whole balancing pipeline: reference -> audit -> ADP -> guided generation -> report.
pipeline: $(STAMP)
	dvc repro
	python -m fairsynth.pipeline show

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
