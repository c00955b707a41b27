# One entry point for people and CI.
#   make run    installs only what the quickstart needs (the locked runtime, OPA, anvil)
#               and runs agora quickstart
#   make test   installs everything (the locked dev dependencies, geth, Helm, promtool,
#               solc too), then lints and runs every test; CI runs it (.ci/run)
# Python dependencies come from uv.lock into .venv; tools are cached in ~/.cache/agora.
AGORA_CACHE ?= $(HOME)/.cache/agora
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(AGORA_CACHE)/bin/uv
export AGORA_CACHE
export PATH := $(AGORA_CACHE)/bin:$(abspath $(VENV))/bin:$(PATH)
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
# The machine's python3 (3.11 or later), never one uv would download.
export UV_PYTHON_DOWNLOADS := never

.PHONY: run install deps deps-run tools lock test test-unit test-integration test-policies \
	test-contracts lint bench clean

# The runtime and the chain extra, exactly as locked; packages a `make deps` added stay.
deps-run:
	@scripts/install-tools.sh uv >/dev/null
	$(UV) sync --locked --inexact --extra chain

# Everything the tests, linters and benchmarks use, exactly as locked.
deps:
	@scripts/install-tools.sh uv >/dev/null
	$(UV) sync --locked --extra dev

tools:
	scripts/install-tools.sh

install: deps tools

run: deps-run
	@scripts/install-tools.sh opa anvil >/dev/null
	$(VENV)/bin/agora quickstart

test: install lint test-policies test-contracts
	$(PY) -m pytest -q

test-unit: deps
	$(PY) -m pytest -q -m "not integration"

test-integration: install
	$(PY) -m pytest -q -m integration

test-policies:
	@scripts/install-tools.sh opa >/dev/null
	opa test policies/ -v

test-contracts:
	scripts/compile-contracts.sh --check

lint: deps
	$(VENV)/bin/ruff check gateway demo tests bench
	$(VENV)/bin/ruff format --check gateway demo tests bench
	$(VENV)/bin/mypy

# After changing the dependencies in pyproject.toml: re-resolve uv.lock, and commit it.
lock:
	@scripts/install-tools.sh uv >/dev/null
	$(UV) lock

bench: install
	$(PY) bench/proxy_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
