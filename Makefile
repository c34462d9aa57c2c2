# shoprec: the two setup commands are `make demo` (main job on the bundled real data: offline
# pipeline, export, feature store, Triton + gateway, REST calls) and
# `make test` (the test suite). Both create the virtual environment on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINTED := src tests feature_repo

.PHONY: demo test lint pipeline bench-offline clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# pip (not uv/poetry): torch 2.14.1 + torchvision 0.29.1 come from this machine's wheel cache.
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shoprec demo

test: $(STAMP)
	@command -v docker-compose >/dev/null || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq docker-compose) >/dev/null 2>&1; } || \
	  echo "docker-compose unavailable: the compose validation tests will be skipped"
	@# Playwright drives Debian's chromium (its own browser download cannot run here).
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "chromium unavailable: the storefront browser tests will be skipped"
	$(BIN)/lint-imports
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy

clean:
	rm -rf data models/* triton_repo/*
