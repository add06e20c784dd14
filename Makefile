# therapy-cds: the two quick-start commands are `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# uv (from PyPI) installs in parallel and several times faster than pip; pip is the fallback.
INSTALL = if $(BIN)/python -m uv --version >/dev/null 2>&1; then \
	$(BIN)/python -m uv pip install --quiet --python $(BIN)/python $(1); else $(PIP) $(1); fi
# Two install levels: `serve` needs only the runtime, `test` adds the tooling (ruff, mypy, ...).
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed-dev
PACKAGES := cds_hooks fhir_mappings plugin

.PHONY: serve test lint typecheck pytest venv fuzz bench soak clean browser docs postgres wrk

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "therapy-cds needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	-$(PIP) uv

$(RUNTIME): pyproject.toml | $(BIN)/python
	@$(call INSTALL,-e .)
	@touch $(RUNTIME)

$(STAMP): pyproject.toml | $(BIN)/python
	@$(call INSTALL,-e ".[dev]")
	@touch $(STAMP) $(RUNTIME)

venv: $(STAMP)

## Run the service on http://127.0.0.1:8000 with the embedded defaults (development auth mode).
## `make serve PORT=8080 HOST=0.0.0.0` picks another port or interface.
HOST ?= 127.0.0.1
PORT ?= 8000
serve: $(RUNTIME)
	$(BIN)/therapy-cds serve --dev --host $(HOST) --port $(PORT)

## Every gate CI runs: ruff (lint + format), mypy --strict, pytest with warnings as errors.
test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy $(PACKAGES)

pytest: $(STAMP) browser postgres
	$(BIN)/python -m pytest -W error

## The browser tests drive Debian's Chromium (never a downloaded browser). On a clean machine
## (CI runs as root) it is installed with apt-get; otherwise those tests are skipped, saying why.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium for the browser tests (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "note: /usr/bin/chromium is missing and this is not root: browser tests will be skipped"; \
	  fi; \
	fi

## The PostgreSQL tests start a throw-away server from Debian's binaries (tests/postgres). On a
## clean machine (CI runs as root) the package is installed here; otherwise they are skipped.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postgresql for the shared-database tests (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else \
	    echo "note: PostgreSQL server binaries are missing and this is not root: tests/postgres will be skipped"; \
	  fi; \
	fi

## Load generator for `make bench` (Debian's wrk), installed when missing and root.
wrk:
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = "0" ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } || \
	  { echo "wrk is missing: apt-get install wrk"; exit 2; }

## Longer fuzzing than `make test` runs: FUZZ_EXAMPLES examples per fuzz test (default 2000).
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -W error -p no:logging tests/fuzz

## therapy-cds vs a bare ASGI floor vs HealthChain, one worker each, on 127.0.0.1 (bench/).
bench: $(STAMP) wrk
	$(BIN)/python bench/bench_service.py

## Sustained load on 2 workers (default 10 minutes: SOAK_SECONDS), errors and memory growth.
SOAK_SECONDS ?= 600
soak: $(STAMP)
	$(BIN)/python bench/soak.py --seconds $(SOAK_SECONDS)

## Regenerate docs/rules.md (the finding catalogue) from the rule data and the sample manifest.
docs: $(STAMP)
	$(BIN)/python -m plugin.web.docs docs/rules.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache therapy-cds.db
