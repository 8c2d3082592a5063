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

.PHONY: browser screenshot demo-t2i setup demo pipeline downstream test lint format clean-venv

setup: $(STAMP)

# torch is pinned (torch==2.13.0) and installed first, from TORCH_INDEX_URL when it is set:
#   make setup TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu     # CPU-only build
#   make setup TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128   # a CUDA build
# Without it pip takes its default (on PyPI a multi-GB CUDA build on Linux; a CPU wheel where
# the machine's index or wheel cache provides one).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q '$(TORCH_SPEC)' $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The main job on the embedded default, the whole pipeline with `dvc repro` (DVC skips what is
# up to date): render the biased reference, audit the toy DDPM's bias, train the ADP, generate
# a balanced dataset with quota-driven distribution guidance, verify, publish, report.
# Both reports' stages are named: `audit_model` is not upstream of `report`.
demo: $(STAMP)
	dvc repro report audit_model
	fairsynth toyfaces show-audit data/audit_model/model_audit.json
	python -m fairsynth.app.stages show

# Text-to-image: the shipped toy text-to-image model and its ADP, four prompts with their own
# training bias, per-prompt quotas met as the verifier judges (~2 min on a 2-core CPU).
demo-t2i: $(STAMP)
	python -m fairsynth.app.stages.generate --params configs/toyfaces-text2image.yaml
	python -m fairsynth.app.stages show-prompts data/t2i/shards/index.json

pipeline: demo

# The fair-classifier experiment on the published shards (after `make demo`; ~25 min on a
# 2-core CPU: the rejection-sampled control gets the balanced set's generation budget).
downstream: $(STAMP)
	dvc repro downstream
	python -m fairsynth.experiments.downstream --show

# The report page is tested in Debian's headless Chromium, installed here where missing (as root,
# with apt-get); without it that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "chromium not installed: the report page's browser test will be skipped"

# the README's picture of the report page, rendered from the last run's data/report/report.html
screenshot: browser
	@test -f data/report/report.html || { echo "no data/report/report.html: run make demo first"; exit 1; }
	@mkdir -p docs
	chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	  --disable-background-networking --disable-component-update --disable-sync \
	  --user-data-dir=$$(mktemp -d) --hide-scrollbars --window-size=1200,2000 \
	  --screenshot=docs/report-page.png "file://$(CURDIR)/data/report/report.html"

test: $(STAMP) browser
	ruff check .
	lint-imports --no-logo
	pytest -q --durations=15

lint: $(STAMP)
	ruff check .
	ruff format --check .

format: $(STAMP)
	ruff format .
	ruff check --fix .

clean-venv:
	rm -rf $(VENV)
