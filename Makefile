# Reactions: make run (the whole stack on 127.0.0.1:8000), make test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install system-deps lint test run add-shard add-aggregator status bench chaos clean

# System packages a fresh Debian machine lacks (nginx, PostgreSQL server).
system-deps:
	@bash scripts/system-deps.sh

$(STAMP): requirements.txt requirements-runtime.txt
	@bash scripts/system-deps.sh
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy common writer aggregator sharding

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

run: install
	$(PY) -m sharding run

add-shard: install
	$(PY) -m sharding add-shard

add-aggregator: install
	$(PY) -m sharding add-aggregator

status: install
	$(PY) -m sharding status

bench: install
	$(PY) -m perf.bench

chaos: install
	$(PY) -m tests.faults.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
