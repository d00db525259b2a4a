"""The live hour follows writes; late writes to cached past hours show up (notification, version check)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from aggregator import db
from aggregator.keys import HOURS, LISTENER, LIVE, PAST, SHARDS
from aggregator.source import no_tally
from tests.support.aggregator_app import (
    Clock,
    MakeAggregator,
    Write,
    body,
    get_hour,
    read_counts,
    sample,
    wait_for_body,
    wait_until,
    write,
)

# Longer than any test: the background refresh (and its version check) never runs.
NO_REFRESH_S = 3600.0
# An advisory lock key only these tests take: cold reads wait on it inside PostgreSQL.
HOLD_KEY = 4242
# Cold reads of this shard's database now waiting for HOLD_KEY (each holds a pooled connection).
WAITING_ON_HOLD = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND objid::bigint = $1 AND NOT granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


async def test_live_hour_follows_writes_from_memory(shard_dsns: list[str], clock: Clock,
                                                    make_aggregator: MakeAggregator) -> None:
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    assert await get_hour(client, clock.hour) == (200, body(0, 0, 0))
    await write(shard_dsns[0], clock.hour, ["ann", "ben"], clock.hour)
    await wait_for_body(client, clock.hour, body(2, 2, 0))
    await write(shard_dsns[1], clock.hour, ["ann", Write("cid", "impression")], clock.hour)
    await write(shard_dsns[2], clock.hour, [Write("ben", "impression")], clock.hour)
    await wait_for_body(client, clock.hour, body(3, 3, 2))
    assert clock.hour in client.app[LIVE].hours
    assert read_counts(client, "miss") == read_counts(client, "future") == 0


async def test_live_refresh_fetches_only_new_users(shard_dsns: list[str], clock: Clock,
                                                   make_aggregator: MakeAggregator) -> None:
    await write(shard_dsns[0], clock.hour, ["u1", "u2"], clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    live = client.app[LIVE].hours[clock.hour]
    before = {name: live.version_of(name) for name in client.app[SHARDS].names}
    assert before == {"s0": 1, "s1": 0, "s2": 0}
    await write(shard_dsns[0], clock.hour, ["u2", "u3"], clock.hour)
    await wait_for_body(client, clock.hour, body(3, 4, 0))
    assert live.version_of("s0") == 2 and live.users.keys() == {"u1", "u2", "u3"}


async def cache_past_hour(client: object, hour: int, expected: str) -> None:
    assert await get_hour(client, hour) == (200, expected)  # type: ignore[arg-type]
    assert hour in client.app[PAST]  # type: ignore[attr-defined]


async def test_late_write_to_cached_hour_by_notification(shard_dsns: list[str], clock: Clock,
                                                         make_aggregator: MakeAggregator) -> None:
    past = clock.hour - 3
    await write(shard_dsns[0], past, ["old"], clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), refresh_interval_s=NO_REFRESH_S)
    listener = client.app[LISTENER]

    async def listening() -> bool:
        return listener.listening == {"s0", "s1", "s2"}

    await wait_until(listening, "LISTEN on every shard")
    await cache_past_hour(client, past, body(1, 1, 0))
    await write(shard_dsns[1], past, ["old", "late"], clock.hour)
    await wait_for_body(client, past, body(2, 3, 0))
    assert sample(client, "reactions_past_invalidations_total", cause="notify") == 1
    assert sample(client, "reactions_past_invalidations_total", cause="version") == 0


async def test_missed_notification_caught_by_version_check(shard_dsns: list[str], clock: Clock,
                                                           make_aggregator: MakeAggregator) -> None:
    past = clock.hour - 3
    await write(shard_dsns[0], past, ["old"], clock.hour)
    # A staleness bound well above the refresh interval: the version check, not the trust bound, drops the hour.
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), listen_for_late_writes=False, live_max_lag_s=10.0)
    await cache_past_hour(client, past, body(1, 1, 0))
    # A writer whose clock still says `past` does not notify at all.
    await write(shard_dsns[2], past, [Write("late", "impression")], current_hour=past)
    await wait_for_body(client, past, body(2, 1, 1))
    assert sample(client, "reactions_past_invalidations_total", cause="version") == 1


async def test_notification_during_a_cold_read_is_not_cached(shard_dsns: list[str], clock: Clock,
                                                             make_aggregator: MakeAggregator) -> None:
    past = clock.hour - 4
    await write(shard_dsns[0], past, ["old"], clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), refresh_interval_s=NO_REFRESH_S,
                                   listen_for_late_writes=False)
    past_hours, shards = client.app[PAST], client.app[SHARDS]
    reading = asyncio.create_task(client.app[HOURS].hour(shards, past, no_tally))
    await asyncio.sleep(0)  # the shared read has started
    past_hours.invalidate(past, "notify")  # a late write's notification lands meanwhile
    assert (await reading).body == body(1, 1, 0).encode()
    assert past not in past_hours
    await write(shard_dsns[1], past, ["late"], clock.hour)
    assert await get_hour(client, past) == (200, body(2, 2, 0))


async def test_cold_reads_never_starve_the_refresher(shard_dsns: list[str], clock: Clock,
                                                     make_aggregator: MakeAggregator,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dsn, past = shard_dsns[0], clock.hour - 3
    await write(dsn, past, ["old"], clock.hour)
    fetch_hour = db.fetch_hour

    async def held_fetch_hour(conn: asyncpg.Connection, hour: int) -> db.ShardHour:
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", HOLD_KEY)  # busy in PostgreSQL
        return await fetch_hour(conn, hour)

    monkeypatch.setattr(db, "fetch_hour", held_fetch_hour)
    # A shard timeout longer than the test: no timeout frees the connections the cold reads hold.
    client = await make_aggregator(shard_dsns=(dsn,), pool_size=4, shard_timeout_s=60.0,
                                   listen_for_late_writes=False)
    await cache_past_hour(client, past, body(1, 1, 0))
    holder = await asyncpg.connect(dsn)
    cold: list[asyncio.Task[tuple[int, str]]] = []
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", HOLD_KEY)
        cold = [asyncio.create_task(get_hour(client, past - 1 - i)) for i in range(8)]

        async def cold_reads_held() -> bool:
            return await holder.fetchval(WAITING_ON_HOLD, HOLD_KEY) >= 2

        await wait_until(cold_reads_held, "cold reads holding connections")
        await write(dsn, clock.hour, ["ann"], clock.hour)
        await write(dsn, past, ["late"], current_hour=past)  # no notification: only the version check sees it
        await wait_for_body(client, clock.hour, body(1, 1, 0))

        async def dropped() -> bool:
            return past not in client.app[PAST]

        await wait_until(dropped, "the version check to drop the changed past hour")
        assert await holder.fetchval(WAITING_ON_HOLD, HOLD_KEY) == 2  # pool_size 4 less the refresher's 2
    finally:
        await holder.close()  # lets the cold reads go
        answers = await asyncio.gather(*cold)
    assert set(answers) == {(200, body(0, 0, 0))}
    assert await get_hour(client, past) == (200, body(2, 2, 0))


async def test_request_after_a_notification_starts_a_new_read(shard_dsns: list[str], clock: Clock,
                                                              make_aggregator: MakeAggregator,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    dsn, past = shard_dsns[0], clock.hour - 4
    await write(dsn, past, ["old"], clock.hour)
    first_read, let_go = asyncio.Event(), asyncio.Event()
    fetch_hour = db.fetch_hour

    async def first_read_held(conn: asyncpg.Connection, hour: int) -> db.ShardHour:
        answer = await fetch_hour(conn, hour)
        if not first_read.is_set():  # hold the first answer, read before the late write
            first_read.set()
            await let_go.wait()
        return answer

    monkeypatch.setattr(db, "fetch_hour", first_read_held)
    # A shard timeout longer than the test: the held read ends only when the test lets it go.
    client = await make_aggregator(shard_dsns=(dsn,), refresh_interval_s=NO_REFRESH_S, shard_timeout_s=60.0,
                                   listen_for_late_writes=False)
    first = asyncio.create_task(get_hour(client, past))
    try:
        async def read() -> bool:
            return first_read.is_set()

        await wait_until(read, "the first read to have its answer")
        await write(dsn, past, ["late"], clock.hour)
        client.app[PAST].invalidate(past, "notify")  # the late write's notification lands
        second = asyncio.create_task(get_hour(client, past))

        async def answered() -> bool:
            return second.done()

        await wait_until(answered, "a request after the notification to answer without the old read")
        assert second.result() == (200, body(2, 2, 0))
    finally:
        let_go.set()
    assert await first == (200, body(1, 1, 0))  # asked before the notification: the old answer is fine
    assert await client.app[PAST].cached(client.app[SHARDS], past) == body(2, 2, 0).encode()


async def test_a_live_snapshot_older_than_the_bound_is_marked_stale(
    shard_dsns: list[str], clock: Clock, make_aggregator: MakeAggregator
) -> None:
    # No refresh after start-up: the snapshot only ages.
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), refresh_interval_s=3600.0, live_max_lag_s=1.0)
    params = {"timestamp": str(clock.now_ms)}
    fresh = await client.get("/analytics", params=params)
    assert fresh.status == 200 and "X-Reactions-Stale" not in fresh.headers
    clock.now_ms += 1_500
    aged = await client.get("/analytics", params=params)
    assert aged.status == 200
    assert aged.headers["X-Reactions-Stale"] == "true"
    assert await aged.text() == await fresh.text()


async def test_a_cached_hour_unconfirmed_past_the_bound_is_checked_before_it_is_served(
        shard_dsns: list[str], clock: Clock, make_aggregator: MakeAggregator) -> None:
    past = clock.hour - 5
    await write(shard_dsns[0], past, ["old"], clock.hour)
    # No LISTEN and no background refresh: nothing but the trust bound can notice the late write.
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), listen_for_late_writes=False,
                                   refresh_interval_s=NO_REFRESH_S, live_max_lag_s=0.2)
    await cache_past_hour(client, past, body(1, 1, 0))
    await write(shard_dsns[1], past, ["late"], current_hour=past)
    await wait_for_body(client, past, body(2, 2, 0))
    assert sample(client, "reactions_past_invalidations_total", cause="version") == 1
