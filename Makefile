# One target per thing people do; `make help` lists them (the `## ` comment on each target's
# line). Everything runs from the venv in .venv, which `make` creates with python3 and fills
# with `pip install -e '.[dev]'` whenever pyproject.toml is newer than the stamp, so a fresh
# clone needs only python3, pip and make. Most take ARGS or PYTEST_ARGS, e.g.
#
#   make run   ARGS='--listen 127.0.0.1:50051 --db var/tessera.db'
#   make test  PYTEST_ARGS='-k ledger -x'
#   make load  ARGS='--target 127.0.0.1:50051 -n 1000'
#   make bench ARGS='--users 2000'

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GENERATED := tessera_api

ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`: two per core (its tests wait on servers, child processes
# and PostgreSQL about as long as they compute), at most 8 (each starts its own PostgreSQL);
# TEST_WORKERS=0 runs the suite in this one process. Bytecode is cached (__pycache__, ignored by
# git) even where PYTHONDONTWRITEBYTECODE is set, as in many CI images: without it each worker
# compiles and assert-rewrites every test module again (8.6 s to collect instead of 2.6 s), and
# each of the hundreds of servers the tests start compiles the server again.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); n=$$((n * 2)); echo $$((n > 8 ? 8 : n)))

.PHONY: help run test lint protos clean install protos-drift buf-lint load bench docs vendor mutation

help: ## list the targets, one line each
	@echo "make TARGET [ARGS='...'] [PYTEST_ARGS='...'], TARGET one of:"
	@sed -n -E 's/^([a-z][a-z-]*):.*## (.*)$$/  \1\t\2/p' $(MAKEFILE_LIST) | expand -t 16

install: $(STAMP) ## make .venv and install the project with its dev tools (grpcurl too)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Metrics at 127.0.0.1:9464 unless TESSERA_METRICS_LISTEN (or --metrics-listen in ARGS) says otherwise.
run: $(STAMP) ## start the server (flags: python -m server --help, or the README)
	TESSERA_METRICS_LISTEN="$${TESSERA_METRICS_LISTEN-127.0.0.1:9464}" TESSERA_HTTP_LISTEN="$${TESSERA_HTTP_LISTEN-127.0.0.1:8080}" $(PY) -m server $(ARGS)

test: $(STAMP) ## run the whole test suite (PYTEST_ARGS for pytest's)
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

load: $(STAMP) ## the load generator against a running server (ARGS: --target ...)
	$(PY) -m client_sdk.load $(ARGS)

bench: $(STAMP) ## Tessera vs a bare echo server; the BENCH line comes last
	$(PY) -m benchmarks.bench $(ARGS)

# About two hours on two cores (5,400 mutants); ARGS names the mutants to run, e.g. again
# after a test was added. The survivors are listed last; `mutmut show NAME` shows one.
mutation: $(STAMP) ## mutmut on server/domain against tests/domain and tests/engine; lists survivors
	$(PY) -m pip install --quiet -e '.[mutation]'
	$(VENV)/bin/mutmut run $(ARGS); $(VENV)/bin/mutmut results | grep -v ': not checked$$' || true

protos: $(STAMP) ## regenerate tessera_api (and its descriptors.binpb) from protos/
	$(PY) scripts/gen_protos.py

docs: $(STAMP) ## write the README's flags table from server/config.py
	$(PY) scripts/flags_table.py --write

lint: $(STAMP) ## ruff, mypy, generated-code drift, README flags table, buf lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/flags_table.py --check
	$(MAKE) --no-print-directory protos-drift
	$(MAKE) --no-print-directory buf-lint

protos-drift: protos ## fail if the committed tessera_api is not what protos/ generates
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
		echo "error: $(GENERATED)/ is not what protos/ generates:"; \
		git status --porcelain -- $(GENERATED); \
		echo "Run 'make protos' and commit the result (never edit generated code by hand)."; \
		exit 1; \
	fi
	@echo "$(GENERATED)/ matches protos/"

# buf comes from the npm package @bufbuild/buf (pinned in package.json / package-lock.json).
buf-lint: ## buf lint of protos/ (skipped without npm)
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

# The portal's front-end libraries (Chart.js) come from the npm registry at the versions
# package-lock.json pins, copied into portal/static/vendor and committed with their licenses,
# so that `make run` and `make test` need neither npm nor the network.
vendor: ## refresh portal/static/vendor from npm (versions pinned in package-lock.json)
	npm ci --loglevel=error --no-audit --no-fund
	$(PY) scripts/vendor_js.py

clean: ## remove the venv, node_modules and caches (never var/: the database and its secrets)
	rm -rf $(VENV) node_modules build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis mutants
	find . -path ./node_modules -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
