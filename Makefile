# Roomcast — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The nats-server that tests use; CI also runs the NATS tests against a current release.
CURRENT_NATS_SERVER := $(VENV)/bin/nats-server
# Test worker processes. Most of a test's time is spent waiting on the real servers it
# starts, so two workers halve the run on two cores; a test file stays on one worker
# (its module fixtures start once). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
PYTEST_WORKERS := -n $(TEST_WORKERS) --dist loadfile

.PHONY: help reset-state setup up test test-nats-current lint fmt proto proto-check bench soak clean images test-containers test-kube

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11+ is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed ## Create the virtualenv; install the system packages the tests need (skips what is present)
	@tools/setup_system.sh
	@$(MAKE) --no-print-directory js

up: setup ## Run the whole stack on this machine (Ctrl-C stops everything)
	$(PY) -m roomcast.testing.stack

test: setup ## Run the test suite (real nats-server and SecantusDB, started on free ports)
	$(PY) -m pytest $(PYTEST_WORKERS)

test-nats-current: setup ## Run the NATS-backed tests against a current nats-server release
	ROOMCAST_NATS_SERVER=$(CURRENT_NATS_SERVER) $(PY) -m pytest $(PYTEST_WORKERS) -m nats

lint: setup ## ruff (format check + lint), mypy and the import-linter contracts (pyproject.toml)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

fmt: setup ## Format the code
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

proto: setup ## Regenerate the gRPC code from proto/
	PYTHON=$(PY) PATH=$(VENV)/bin:$$PATH tools/gen_proto.sh

bench: setup ## Run the benchmark scripts and print their figures (see docs/benchmarks.md)
	$(PY) bench/run_all.py

.PHONY: bench-idle
bench-idle: setup ## 50k idle authenticated sockets over 4 gateways: memory per socket, reconnect after a restart (~5 min)
	$(PY) bench/idle_50k.py --json .bench/idle_50k.json

images: setup ## Build the four service images (podman, or docker where that is installed)
	tools/build_images.sh

test-containers: images ## The compose stack in containers, with end-to-end tests against it
	$(PY) -m pytest tests/containers/test_compose_stack.py -m containers --timeout 900

test-kube: images ## The dev overlay run with podman kube play (bootstrap included), with a chat smoke test
	$(PY) -m pytest tests/containers/test_kube_play.py -m containers --timeout 900

soak: setup ## Long-running load and soak tests (not part of `make test`)
	$(PY) -m pytest -m soak --timeout 3600

.PHONY: chaos chaos-full
chaos: setup ## Kill each part of a supervised stack in turn under chat load; nothing acked may be lost (CI schedule)
	$(PY) -m pytest -m chaos tests/chaos

chaos-full: setup ## The full chaos schedule: every fault three times, longer healthy periods (~15 min)
	ROOMCAST_CHAOS_SCHEDULE=full $(PY) -m pytest -m chaos tests/chaos

.PHONY: js screenshots
JS_SOURCES := $(shell find clients/typescript/src clients/web/src clients/web/build.mjs -type f 2>/dev/null)

clients/node_modules/.installed: clients/package.json clients/typescript/package.json clients/web/package.json
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || { echo "Node.js 20 or newer is required for clients/"; exit 1; }
	cd clients && npm install --no-audit --no-fund --loglevel=error
	touch $@

clients/web/dist/index.html: clients/node_modules/.installed $(JS_SOURCES)
	cd clients && npm run build

js: clients/web/dist/index.html ## Install and build the TypeScript SDK and the web app (clients/, npm; Node >= 20)

screenshots: setup ## Regenerate the web app's screenshots in docs/img/ (headless Chromium, real stack)
	$(PY) tests/browser/screenshots.py

reset-state: ## Forget every user, room and message of `make up` (deletes .roomcast/; the virtualenv stays)
	rm -rf .roomcast

clean: ## Remove the virtualenv and local state (.roomcast/)
	rm -rf $(VENV) .roomcast .mypy_cache .ruff_cache .pytest_cache
