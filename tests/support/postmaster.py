"""Finding a PostgreSQL's processes and restarting a crashed one, by its data directory.

A server's postmaster and every backend work in its data directory, so
``/proc/<pid>/cwd`` finds all of them without matching process names.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

from sharding.postgres import LocalPostgres
from tests.support.netns import Host

# How long a crashed server may take to be gone and to start again.
RESTART_DEADLINE_S = 30.0
# Polling period while a crashed server's processes go away.
POLL_S = 0.05
# Between two attempts to start: pg_ctl itself waits for readiness, so retries are few.
RETRY_PAUSE_S = 0.2
# Each test host has a network stack of its own, so PostgreSQL's usual port is free in it.
HOST_PG_PORT = 5432


def world_traversable_tmpdir(prefix: str) -> Path:
    """A new temporary directory the PostgreSQL OS user can traverse (its data directories go below)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path


def processes_in(directory: Path) -> list[int]:
    """Pids whose working directory is ``directory`` (a PostgreSQL's backends work in its data directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(proc / "cwd")) == directory:
                    found.append(int(proc.name))
    return found


def stale_postmaster(data_dir: Path) -> bool:
    """Whether the dead postmaster of postmaster.pid is still in /proc (a zombie until init reaps it).

    PostgreSQL refuses to start while that pid exists ("lock file already exists").
    """
    with contextlib.suppress(OSError, ValueError):
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        return Path(f"/proc/{pid}").exists()
    return False


def start_postgres(pg: LocalPostgres, deadline_s: float = RESTART_DEADLINE_S) -> None:
    """Start a crashed server once its orphaned backends and its zombie postmaster are gone."""
    deadline = time.monotonic() + deadline_s
    data_dir = pg.data_dir.resolve()
    while (processes_in(data_dir) or stale_postmaster(data_dir)) and time.monotonic() < deadline:
        time.sleep(POLL_S)
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
