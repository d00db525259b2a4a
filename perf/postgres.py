"""PostgreSQL servers of a benchmark's own: started in a new directory, stopped and removed on the way out."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sharding.local.postgres import LocalPostgres
from sharding.local.processes import free_port


@contextlib.contextmanager
def bench_postgres(prefix: str, count: int = 1) -> Iterator[tuple[Path, list[LocalPostgres]]]:
    """(the directory, ``count`` running servers). The servers require the password of the
    directory's ``pgpass``, which this process's own connections use too (PGPASSFILE)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)  # PostgreSQL's OS user must traverse it
    os.environ["PGPASSFILE"] = str(root / "pgpass")
    servers: list[LocalPostgres] = []
    try:
        for i in range(count):
            server = LocalPostgres(root / f"pg{i}", free_port(), passfile=root / "pgpass")
            servers.append(server)
            server.start()
        yield root, servers
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
