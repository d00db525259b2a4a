"""The writer's commit connections: kept between uses, replaced when in doubt (real PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from common.pg import HeldConnections, WaitBounds
from tests.waiting import wait_until

BOUNDS = WaitBounds(acquire_s=2.0, statement_s=2.0)


@pytest.fixture
async def pool(shard_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(shard_dsn, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def held(pool: asyncpg.Pool) -> AsyncIterator[HeldConnections]:
    held = HeldConnections(pool, BOUNDS)
    try:
        yield held
    finally:
        await held.close()  # before the pool closes: it waits for every connection given out


async def backend_pid(held: HeldConnections, failure: BaseException | None = None) -> int:
    conn = await held.take()
    try:
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
    finally:
        await held.give_back(conn, failure)
    return pid


async def test_a_connection_is_kept_between_uses_and_given_back_on_close(pool: asyncpg.Pool,
                                                                         held: HeldConnections) -> None:
    first = await backend_pid(held)
    assert await backend_pid(held) == first, "the same session, without a trip through the pool"
    assert pool.get_idle_size() == 0, "the kept connection is not idle in the pool"
    await held.close()
    assert pool.get_idle_size() == pool.get_size(), "close gave it back"


async def test_a_failure_that_leaves_the_session_in_doubt_terminates_it(held: HeldConnections) -> None:
    first = await backend_pid(held)
    # A rollback reported by the server leaves the session usable: kept.
    assert await backend_pid(held, asyncpg.UniqueViolationError("rolled back")) == first
    # A timeout leaves it in doubt (the server may still be running the statement): replaced.
    assert await backend_pid(held, TimeoutError()) == first
    assert await backend_pid(held) != first


async def test_a_connection_the_server_closed_is_replaced_on_the_next_take(shard_dsn: str,
                                                                           held: HeldConnections) -> None:
    first = await backend_pid(held)
    killer = await asyncpg.connect(shard_dsn)
    try:
        assert await killer.fetchval("SELECT pg_terminate_backend($1)", first)

        async def exited() -> bool:
            return not await killer.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", first)

        await wait_until(exited, "the backend to exit", 5, poll_s=0.01)
    finally:
        await killer.close()
    assert await backend_pid(held) != first


async def test_keep_zero_gives_every_connection_back(pool: asyncpg.Pool) -> None:
    held = HeldConnections(pool, BOUNDS, keep=0)
    await backend_pid(held)
    assert pool.get_idle_size() == 1
