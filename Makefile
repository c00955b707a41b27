# One entry point for people and CI. Tools are cached under ~/.cache/agora.
AGORA_CACHE ?= $(HOME)/.cache/agora
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(AGORA_CACHE)/bin:$(abspath $(VENV))/bin:$(PATH)

.PHONY: install tools run test test-unit test-integration test-policies test-contracts lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed tools

tools:
	scripts/install-tools.sh

run: install
	$(VENV)/bin/agora quickstart

test: install lint test-policies test-contracts
	$(PY) -m pytest -q

test-unit: $(VENV)/.installed
	$(PY) -m pytest -q -m "not integration"

test-integration: install
	$(PY) -m pytest -q -m integration

test-policies: tools
	opa test policies/ -v

test-contracts: tools
	scripts/compile-contracts.sh --check

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check gateway tests bench
	$(VENV)/bin/ruff format --check gateway tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/proxy_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
