from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from writer.main import create_app
from writer.settings import Settings


class HourRollup(NamedTuple):
    clicks: int
    impressions: int
    users: frozenset[str]


async def stored_events(dsn: str) -> list[tuple[int, str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT ts, username, event FROM reactions ORDER BY id")
    finally:
        await conn.close()
    return [(r["ts"], r["username"], r["event"]) for r in rows]


async def rollup(dsn: str, hour: int) -> HourRollup:
    conn = await asyncpg.connect(dsn)
    try:
        counts = await conn.fetchrow("SELECT clicks, impressions FROM hour_counts WHERE hour = $1", hour)
        users = await conn.fetch("SELECT username FROM hour_users WHERE hour = $1", hour)
    finally:
        await conn.close()
    clicks, impressions = (counts["clicks"], counts["impressions"]) if counts else (0, 0)
    return HourRollup(clicks, impressions, frozenset(r["username"] for r in users))


WriterClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def writer_client(aiohttp_client: Callable[..., Awaitable[TestClient]], shard_dsn: str) -> WriterClient:
    """Start a writer app on the test shard; keyword arguments override Settings."""

    async def make(**overrides: object) -> TestClient:
        settings = Settings(dsn=overrides.pop("dsn", shard_dsn), **overrides)  # type: ignore[arg-type]
        return await aiohttp_client(create_app(settings))

    return make
