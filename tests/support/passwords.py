"""The test session's PostgreSQL password: one passfile (mode 0600) for every server the tests start.

tests/conftest.py points ``PGPASSFILE`` at it, so that asyncpg and psql in
the tests find the password as any client does, and every test cluster is
given it as its passfile (ClusterSettings.passfile).
"""

from __future__ import annotations

import functools
from pathlib import Path

from sharding.local.passfile import ensure_passfile
from sharding.local.postgres import PG_USER
from tests.support.tmpdirs import session_tmpdir


@functools.cache
def session_passfile() -> Path:
    """Made once per test process, in a directory only we read (mkdtemp: mode 700)."""
    path = session_tmpdir("reactions-pgpass-") / "pgpass"
    ensure_passfile(path, PG_USER)
    return path
