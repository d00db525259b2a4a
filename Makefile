# Reactions: make run (the whole stack on 127.0.0.1:8000), make test.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# make monitor: the cluster of `make run` with this DATA_DIR, Prometheus on this port.
DATA_DIR ?= var
PROMETHEUS_PORT ?= 9090

.PHONY: install system-deps docker-deps docker-base docker-up docker-down lint test run add-shard apply add-aggregator status prune verify-shard import monitor bench chaos clean

# System packages a fresh Debian machine lacks (nginx, PostgreSQL server).
system-deps:
	@bash scripts/system-deps.sh

# Docker's engine and debootstrap, only for the Docker targets and tests/docker (never for make run).
docker-deps:
	@bash scripts/docker-deps.sh

# debian:bookworm-slim, made with debootstrap where the engine cannot pull it.
docker-base: docker-deps
	@bash scripts/docker-base.sh

# The stack under Docker compose on 127.0.0.1:$(PORT) (default 8000); DOCKER_HOST picks the engine.
docker-up: install docker-deps
	@COMPOSE=$(VENV)/bin/docker-compose PIP=$(VENV)/bin/pip bash scripts/docker-up.sh

# Stops the stack, keeps its volumes (docker compose down -v removes them).
docker-down: install
	$(VENV)/bin/docker-compose down

$(STAMP): requirements.txt requirements-runtime.txt
	@bash scripts/system-deps.sh
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy common writer aggregator sharding

# tests/docker starts a Docker engine of its own: Debian's docker.io is installed for it.
test: install docker-deps
	$(PY) -m pytest $(PYTEST_ARGS)

run: install
	$(PY) -m sharding run

add-shard: install
	$(PY) -m sharding add-shard

apply: install
	$(PY) -m sharding apply

add-aggregator: install
	$(PY) -m sharding add-aggregator

status: install
	$(PY) -m sharding status

# Drop raw events older than the retention now, on every shard (OLDER_THAN_DAYS=N to choose).
prune: install
	$(PY) -m sharding prune $(if $(OLDER_THAN_DAYS),--older-than-days $(OLDER_THAN_DAYS))

# Check a shard's rollups against its raw events: make verify-shard SHARD=a [REPAIR=1]
verify-shard: install
	$(PY) -m sharding verify-shard $(SHARD) $(if $(REPAIR),--repair)

# Import events through the batch endpoint (docs/operations.md, Importing history):
#   make import FILE=events.csv    or    make import FROM_DSN=postgresql://... [TABLE=user_reaction] [URL=http://...]
# Not echoed: a DSN may hold a password.
import: install
	@test -n "$(FILE)$(FROM_DSN)" || { echo "usage: make import FILE=events.csv, or make import FROM_DSN=DSN [TABLE=user_reaction] [URL=http://host:port]" >&2; exit 2; }
	@$(PY) -m sharding import $(if $(FILE),'$(FILE)') $(if $(FROM_DSN),--from-dsn '$(FROM_DSN)') $(if $(TABLE),--table '$(TABLE)') $(if $(URL),--url '$(URL)')

# Prometheus in the foreground on the configuration `make run` keeps in DATA_DIR
# (every writer and aggregator, monitoring/rules.yml); its data in DATA_DIR/prometheus.
monitor: install
	@test -f $(DATA_DIR)/prometheus.yml || { echo "no $(DATA_DIR)/prometheus.yml: start the cluster with make run first" >&2; exit 1; }
	prometheus --config.file=$(DATA_DIR)/prometheus.yml --storage.tsdb.path=$(DATA_DIR)/prometheus \
		--web.listen-address=127.0.0.1:$(PROMETHEUS_PORT) --web.enable-lifecycle

bench: install
	$(PY) -m perf.bench

chaos: install
	$(PY) -m tests.faults.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
