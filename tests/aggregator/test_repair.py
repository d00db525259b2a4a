"""A repaired hour is read whole again: an aggregator never keeps a user the repair removed."""

from __future__ import annotations

import asyncpg

from aggregator.keys import PAST
from common import rollups
from tests.support.aggregator_app import Clock, MakeAggregator, body, get_hour, wait_for_body, write

# Corruption that an incremental reader picks up: an extra user above the held version.
GHOST = """
UPDATE hour_counts SET version = version + 1 WHERE hour = $1;
INSERT INTO hour_users (hour, username, version) SELECT $1, 'ghost', version FROM hour_counts WHERE hour = $1;
"""


async def damage_then_repair(dsn: str, hour: int, client: object, damaged: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(GHOST.replace("$1", str(hour)))
        await wait_for_body(client, hour, damaged)  # type: ignore[arg-type]
        await rollups.repair(conn, hour)
    finally:
        await conn.close()


async def test_a_live_aggregator_drops_a_user_the_repair_removed(
        shard_dsns: list[str], clock: Clock, make_aggregator: MakeAggregator) -> None:
    await write(shard_dsns[0], clock.hour, ["ann", "ben"], clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    await wait_for_body(client, clock.hour, body(2, 2, 0))
    await damage_then_repair(shard_dsns[0], clock.hour, client, body(3, 2, 0))
    await wait_for_body(client, clock.hour, body(2, 2, 0))


async def test_a_cached_past_hour_is_dropped_by_a_repair(
        shard_dsns: list[str], clock: Clock, make_aggregator: MakeAggregator) -> None:
    past = clock.hour - 3
    await write(shard_dsns[1], past, ["ann", "ben"], clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), listen_for_late_writes=False)
    assert await get_hour(client, past) == (200, body(2, 2, 0))
    await damage_then_repair(shard_dsns[1], past, client, body(3, 2, 0))
    assert past in client.app[PAST]
    await wait_for_body(client, past, body(2, 2, 0))
