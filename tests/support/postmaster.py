"""PostgreSQL servers for tests: one inside a test host, and restarting one that crashed.

A server's postmaster and every backend work in its data directory, so
``processes_in`` (sharding/local/postgres.py) finds all of them without matching
process names.
"""

from __future__ import annotations

import time
from pathlib import Path

from sharding.local.postgres import LocalPostgres, processes_in
from tests.support.netns import Host

__all__ = ["HOST_PG_PORT", "postgres_in", "processes_in", "start_postgres"]

# How long a crashed server may take to be gone and to start again.
RESTART_DEADLINE_S = 30.0
# Between two attempts to start: pg_ctl itself waits for readiness, so retries are few.
RETRY_PAUSE_S = 0.2
# Each test host has a network stack of its own, so PostgreSQL's usual port is free in it.
HOST_PG_PORT = 5432


def start_postgres(pg: LocalPostgres, deadline_s: float = RESTART_DEADLINE_S) -> None:
    """Start a crashed server once its orphaned backends and its zombie postmaster are gone."""
    deadline = time.monotonic() + deadline_s
    pg.wait_for_crash_cleanup(deadline_s)
    while True:
        try:
            pg.start()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(RETRY_PAUSE_S)


def postgres_in(host: Host, data_dir: Path, port: int = HOST_PG_PORT) -> LocalPostgres:
    """A server (not started yet) that runs inside ``host`` and listens on the host's address."""
    return LocalPostgres(data_dir, port, listen_address=host.address, command_prefix=tuple(host.command([])))
