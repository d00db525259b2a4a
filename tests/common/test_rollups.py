"""verify finds rollups that differ from the raw log, and repair rebuilds them, on a real PostgreSQL."""

from __future__ import annotations

import asyncpg

from common import rollups
from tests.support.aggregator_app import BASE_HOUR, Write, write
from tests.support.writer_db import rollup

DAMAGE = """
UPDATE hour_counts SET clicks = clicks + 5, impressions = impressions - 1 WHERE hour = $1;
DELETE FROM hour_users WHERE hour = $1 AND username = 'ben';
INSERT INTO hour_users (hour, username, version) VALUES ($1, 'ghost', 1);
"""


async def test_verify_finds_damaged_hours_and_repair_rebuilds_them(shard_dsn: str) -> None:
    await write(shard_dsn, BASE_HOUR, ["ann", "ben", Write("ann", "impression")], BASE_HOUR)
    await write(shard_dsn, BASE_HOUR - 1, ["cid"], BASE_HOUR)
    good = await rollup(shard_dsn, BASE_HOUR)
    conn = await asyncpg.connect(shard_dsn)
    try:
        clean = await rollups.verify(conn)
        assert (clean.covered_hours, clean.uncovered_hours, clean.differences) == (2, 0, [])
        await conn.execute(DAMAGE.replace("$1", str(BASE_HOUR)))
        await conn.execute("INSERT INTO hour_counts VALUES ($1, 1, 0, 1)", BASE_HOUR - 5)  # no raw rows at all

        found = (await rollups.verify(conn)).differences

        assert [d.hour for d in found] == [BASE_HOUR - 5, BASE_HOUR]
        assert found[1] == rollups.HourDifference(BASE_HOUR, raw_clicks=2, raw_impressions=1, clicks=7,
                                                  impressions=0, missing_users=["ben"], extra_users=["ghost"])
        assert "1 user(s) extra from hour_users: ghost" in found[1].describe()
        epoch = await conn.fetchval("SELECT epoch FROM hour_counts WHERE hour = $1", BASE_HOUR)
        for diff in found:
            await rollups.repair(conn, diff.hour)
        assert (await rollups.verify(conn)).differences == []
        assert await conn.fetchval("SELECT epoch FROM hour_counts WHERE hour = $1", BASE_HOUR) == epoch + 1
    finally:
        await conn.close()
    assert await rollup(shard_dsn, BASE_HOUR) == good
    assert await rollup(shard_dsn, BASE_HOUR - 5) == (0, 0, frozenset())


async def test_users_differing_with_equal_counters_are_found(shard_dsn: str) -> None:
    await write(shard_dsn, BASE_HOUR, ["ann"], BASE_HOUR)
    conn = await asyncpg.connect(shard_dsn)
    try:
        await conn.execute("UPDATE hour_users SET username = 'bob' WHERE hour = $1", BASE_HOUR)
        found = (await rollups.verify(conn)).differences
        assert found == [rollups.HourDifference(BASE_HOUR, 1, 0, 1, 0, ["ann"], ["bob"])]
    finally:
        await conn.close()
