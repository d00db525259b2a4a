"""Writer tests' helpers: what a shard database holds after the writer committed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

import asyncpg
from aiohttp.test_utils import TestClient


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

