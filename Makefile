# One target per thing people do. Everything runs from the venv in .venv, which `make` creates
# with python3 and fills with `pip install -e '.[dev]'` whenever pyproject.toml is newer than the
# stamp, so a fresh clone needs only python3, pip and make.
#
#   make run   [ARGS='--listen 127.0.0.1:50051 ...']   start the server
#   make test  [PYTEST_ARGS='-k ledger -x']             run the tests
#   make lint                                           ruff, mypy, generated-code drift, buf lint
#   make load  [ARGS='--target 127.0.0.1:50051 -n 1000']  the load generator against a server
#   make bench [ARGS='--users 2000']                    Tessera vs a bare echo server; BENCH line last
#   make protos                                         regenerate client_sdk/proto from protos/
#   make clean                                          remove the venv, var/ and caches

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GENERATED := client_sdk/proto

ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test lint protos clean install protos-drift buf-lint load bench

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

run: $(STAMP)
	$(PY) -m server $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

load: $(STAMP)
	$(PY) -m client_sdk.load $(ARGS)

bench: $(STAMP)
	$(PY) -m benchmarks.bench $(ARGS)

protos: $(STAMP)
	$(PY) scripts/gen_protos.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(MAKE) --no-print-directory protos-drift
	$(MAKE) --no-print-directory buf-lint

# Regenerate, then fail if the committed generated code differs (or is missing/extra).
protos-drift: protos
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
		echo "error: $(GENERATED)/ is not what protos/ generates:"; \
		git status --porcelain -- $(GENERATED); \
		echo "Run 'make protos' and commit the result (never edit generated code by hand)."; \
		exit 1; \
	fi
	@echo "$(GENERATED)/ matches protos/"

# buf comes from the npm package @bufbuild/buf (pinned in package.json / package-lock.json).
buf-lint:
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "buf lint: skipped (npm not found)"; \
	else \
		if [ ! -x node_modules/.bin/buf ] || [ package.json -nt node_modules/.bin/buf ] \
			|| [ package-lock.json -nt node_modules/.bin/buf ]; then \
			npm ci --loglevel=error --no-audit --no-fund && touch node_modules/.bin/buf || exit 1; \
		fi; \
		echo "node_modules/.bin/buf lint"; \
		node_modules/.bin/buf lint; \
	fi

clean:
	rm -rf $(VENV) node_modules var build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./node_modules -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
