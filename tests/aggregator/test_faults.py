"""A shard that stops: 503 for past hours, a stale-marked live hour, and recovery."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parsedate_to_datetime

import asyncpg
from aiohttp.test_utils import TestClient

from common.schema import migrate
from sharding.local.postgres import LocalPostgres
from tests.support.aggregator_app import (
    Clock,
    MakeAggregator,
    body,
    get_hour,
    ts_in,
    wait_for_body,
    wait_until,
    write,
)


async def migrated(server: LocalPostgres) -> str:
    conn = await asyncpg.connect(server.dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return server.dsn


async def live_answer(client: TestClient, clock: Clock) -> tuple[int, str, dict[str, str]]:
    resp = await client.get("/analytics", params={"timestamp": str(ts_in(clock.hour))})
    return resp.status, await resp.text(), dict(resp.headers)


async def test_stopped_shard_then_recovery(shard_dsns: list[str], clock: Clock, make_aggregator: MakeAggregator,
                                           start_postgres: Callable[[], LocalPostgres]) -> None:
    server = start_postgres()
    own = await migrated(server)
    for dsn, user in ((shard_dsns[0], "ann"), (own, "bob")):
        await write(dsn, clock.hour, [user], clock.hour)
        await write(dsn, clock.hour - 1, [user], clock.hour)
    client = await make_aggregator(shard_dsns=(shard_dsns[0], own), shard_timeout_s=1.0)
    assert (await live_answer(client, clock))[:2] == (200, body(2, 2, 0))

    server.stop()
    await write(shard_dsns[0], clock.hour, ["cy"], clock.hour)

    # Stale-marked, the answer is the last complete snapshot (as of Stale-Since), never a mix with
    # what the shards still up have had since (docs/design.md, Invariants 4).
    async def stale() -> bool:
        status, text, headers = await live_answer(client, clock)
        return status == 200 and headers.get("X-Reactions-Stale") == "true" and text == body(2, 2, 0)

    await wait_until(stale, "a stale-marked live answer")
    _, _, headers = await live_answer(client, clock)
    assert parsedate_to_datetime(headers["X-Reactions-Stale-Since"]).timestamp() > 0
    status, reason = await get_hour(client, clock.hour - 1)
    assert status == 503 and "shard s1" in reason
    assert (await client.get("/readyz")).status == 503

    server.start()
    await write(own, clock.hour, ["dee"], clock.hour)
    await wait_for_body(client, clock.hour, body(4, 4, 0))
    assert "X-Reactions-Stale" not in (await live_answer(client, clock))[2]
    assert await get_hour(client, clock.hour - 1) == (200, body(2, 2, 0))
    assert (await client.get("/readyz")).status == 200


async def test_live_hour_without_a_complete_read_is_503(shard_dsns: list[str], clock: Clock,
                                                        make_aggregator: MakeAggregator,
                                                        start_postgres: Callable[[], LocalPostgres]) -> None:
    server = start_postgres()
    own = await migrated(server)
    server.stop()
    client = await make_aggregator(shard_dsns=(shard_dsns[0], own), shard_timeout_s=1.0)
    status, text, _ = await live_answer(client, clock)
    assert status == 503 and "no complete read" in text
    server.start()
    await wait_for_body(client, clock.hour, body(0, 0, 0))
