# therapy-cds: the two quick-start commands are `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := cds_hooks fhir_mappings plugin

.PHONY: serve test lint typecheck pytest venv fuzz bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)

## Run the service on http://127.0.0.1:8000 with the embedded defaults (development auth mode).
serve: $(STAMP)
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
