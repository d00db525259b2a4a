"""The cached hours' version check: every hour's stamp from one scan of hour_counts, on real PostgreSQL."""

from __future__ import annotations

import json

import asyncpg

from aggregator import db
from tests.support.aggregator_app import BASE_HOUR, write


async def test_stamps_are_what_a_whole_read_of_each_hour_sees(shard_dsn: str) -> None:
    written = [BASE_HOUR - 5, BASE_HOUR - 3, BASE_HOUR - 2]
    for i, hour in enumerate(written):
        await write(shard_dsn, hour, [f"user{n}" for n in range(i + 1)], BASE_HOUR)
    await write(shard_dsn, BASE_HOUR - 3, ["late"], BASE_HOUR)  # a second batch: a later version
    conn = await asyncpg.connect(shard_dsn)
    try:
        await conn.execute("UPDATE hour_counts SET epoch = epoch + 2 WHERE hour = $1", BASE_HOUR - 2)  # repaired
        asked = [BASE_HOUR - 2, BASE_HOUR - 6, BASE_HOUR - 3, BASE_HOUR - 5]  # one hour without a row
        stamps = await db.fetch_stamps(conn, asked)
        assert set(stamps.versions) == set(written)
        for hour in asked:
            assert stamps.stamp(hour) == (await db.fetch_hour(conn, hour)).stamp, hour
        assert stamps.stamp(BASE_HOUR - 2).epoch == 2 and stamps.stamp(BASE_HOUR - 6).version == db.EMPTY_VERSION
        none = await db.fetch_stamps(conn, [BASE_HOUR - 6])
        assert (none.identity, none.versions) == (stamps.identity, {})
    finally:
        await conn.close()


def scans_of(plan: object, table: str) -> int:
    """How many nodes of an EXPLAIN (FORMAT JSON) plan read ``table``."""
    if isinstance(plan, dict):
        return (plan.get("Relation Name") == table) + sum(scans_of(value, table) for value in plan.values())
    if isinstance(plan, list):
        return sum(scans_of(value, table) for value in plan)
    return 0


async def test_the_check_scans_hour_counts_once(shard_dsn: str) -> None:
    await write(shard_dsn, BASE_HOUR - 1, ["ann"], BASE_HOUR)
    conn = await asyncpg.connect(shard_dsn)
    try:
        plan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + db.HOUR_VERSIONS, [BASE_HOUR - 1]))
    finally:
        await conn.close()
    assert scans_of(plan, "hour_counts") == 1
