"""The writer keeps the raw log's partitions: made ahead, made on demand for a late day, dropped after the retention."""

from __future__ import annotations

import asyncpg

from common import partitions
from common.hours import MS_PER_HOUR, hour_of, now_ms
from tests.support.writer_db import WriterClient, rollup
from tests.waiting import wait_until

DAY_MS = 24 * MS_PER_HOUR


async def days_and_pruned(dsn: str) -> tuple[set[int], set[int]]:
    conn = await asyncpg.connect(dsn)
    try:
        pruned = {r["day"] for r in await conn.fetch("SELECT day FROM raw_pruned")}
        return await partitions.existing_days(conn), pruned
    finally:
        await conn.close()


async def test_a_late_days_partition_is_made_on_demand_and_dropped_by_the_next_writer(
        writer_client: WriterClient, shard_dsn: str) -> None:
    today = partitions.day_of_hour(hour_of(now_ms()))
    # A long retention first, so that its own upkeep never races the late day away.
    client = await writer_client(raw_retention_days=100)

    async def made_ahead() -> bool:
        return {today, today + 1}.issubset((await days_and_pruned(shard_dsn))[0])

    await wait_until(made_ahead, "today's and tomorrow's partitions made at start")
    late_ts = now_ms() - 40 * DAY_MS
    late_day = partitions.day_of_hour(hour_of(late_ts))
    resp = await client.post(f"/analytics/{late_ts}/ann/click")
    assert resp.status == 204, await resp.text()
    assert late_day in (await days_and_pruned(shard_dsn))[0]

    await writer_client(raw_retention_days=30)  # its upkeep runs as it starts

    async def dropped() -> bool:
        days, pruned = await days_and_pruned(shard_dsn)
        return late_day not in days and late_day in pruned

    await wait_until(dropped, f"day {late_day} dropped and recorded")
    assert today in (await days_and_pruned(shard_dsn))[0]
    assert await rollup(shard_dsn, hour_of(late_ts)) == (1, 0, frozenset({"ann"}))
