# therapy-cds: the two quick-start commands are `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# Two install levels: `serve` needs only the runtime, `test` adds the tooling (ruff, mypy, ...).
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed-dev
PACKAGES := cds_hooks fhir_mappings plugin

.PHONY: serve test lint typecheck pytest venv fuzz bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "therapy-cds needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(PIP) -e .
	@touch $(RUNTIME)

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e ".[dev]"
	@touch $(STAMP) $(RUNTIME)

venv: $(STAMP)

## Run the service on http://127.0.0.1:8000 with the embedded defaults (development auth mode).
serve: $(RUNTIME)
	$(BIN)/therapy-cds serve --dev

## Every gate CI runs: ruff (lint + format), mypy --strict, pytest with warnings as errors.
test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy $(PACKAGES)

pytest: $(STAMP)
	$(BIN)/python -m pytest -W error

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache therapy-cds.db
