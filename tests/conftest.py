"""Fixtures shared by every test: real PostgreSQL servers, started here.

One server serves the whole session; each test gets freshly truncated
databases on it. Tests that need to stop a server start one of their own
(``start_postgres``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from sharding.local.postgres import LocalPostgres
from sharding.local.processes import free_port
from tests.support.passwords import session_passfile
from tests.support.shard_db import reset_database
from tests.support.tmpdirs import remove_session_tmpdirs, world_traversable_tmpdir

SHARD_DATABASES = ("shard_a", "shard_b", "shard_c")
# Every server the tests start requires the password; clients find it here, as libpq's would.
os.environ["PGPASSFILE"] = str(session_passfile())


@pytest.fixture(scope="session", autouse=True)
def session_tmpdirs_removed(request: pytest.FixtureRequest) -> Iterator[None]:
    """The session's temporary directories go at its end (first in, so last out: after every server
    stopped), unless a test failed: then they stay, with their logs."""
    yield
    if request.session.testsfailed == 0:
        remove_session_tmpdirs()


@pytest.fixture(scope="session")
def start_postgres() -> Iterator[Callable[[], LocalPostgres]]:
    """A factory of PostgreSQL servers, all stopped at the end of the session."""
    started: list[LocalPostgres] = []
    root = world_traversable_tmpdir("reactions-pg-")

    def start() -> LocalPostgres:
        server = LocalPostgres(root / f"pg{len(started)}", free_port())
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop("immediate")


@pytest.fixture(scope="session")
def postgres(start_postgres: Callable[[], LocalPostgres]) -> LocalPostgres:
    """The session's shared server, with one database per test shard."""
    server = start_postgres()
    for name in SHARD_DATABASES:
        server.create_database(name)
    return server


@pytest.fixture
async def shard_dsns(postgres: LocalPostgres) -> AsyncIterator[list[str]]:
    """DSNs of three empty shard databases on the shared server."""
    dsns = [postgres.dsn_for(name) for name in SHARD_DATABASES]
    for dsn in dsns:
        await reset_database(dsn)
    yield dsns


@pytest.fixture
async def shard_dsn(shard_dsns: list[str]) -> str:
    """One empty shard database."""
    return shard_dsns[0]
