"""Exact answers: the union of users over shards, sums of counters, the response format."""

from __future__ import annotations

import asyncio

from aggregator.keys import LIVE, PAST
from tests.support.aggregator_app import (
    Clock,
    MakeAggregator,
    Write,
    body,
    get_hour,
    read_counts,
    sample,
    write,
)

# alice is on all three shards, bob on two (a failover, a reshard): each counts once.
OVERLAPPING = (
    ["alice", "bob", Write("alice", "impression"), "carol"],
    ["alice", Write("bob", "impression"), "dave"],
    [Write("alice", "impression"), "erin"],
)
OVERLAPPING_BODY = body(unique_users=5, clicks=6, impressions=3)


async def write_overlapping(shard_dsns: list[str], hour: int, current_hour: int) -> None:
    for dsn, writes in zip(shard_dsns, OVERLAPPING, strict=True):
        await write(dsn, hour, writes, current_hour)


async def test_live_hour_is_the_exact_union(shard_dsns: list[str], clock: Clock,
                                            make_aggregator: MakeAggregator) -> None:
    await write_overlapping(shard_dsns, clock.hour, clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    resp = await client.get("/analytics", params={"timestamp": str(clock.now_ms)})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert await resp.text() == OVERLAPPING_BODY
    assert "X-Reactions-Stale" not in resp.headers
    assert read_counts(client, "live") == 1


async def test_past_hour_is_the_exact_union_and_cached(shard_dsns: list[str], clock: Clock,
                                                       make_aggregator: MakeAggregator) -> None:
    past = clock.hour - 5
    await write_overlapping(shard_dsns, past, clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    assert await get_hour(client, past) == (200, OVERLAPPING_BODY)
    assert await get_hour(client, past) == (200, OVERLAPPING_BODY)
    assert (read_counts(client, "miss"), read_counts(client, "past")) == (1, 1)
    assert past in client.app[PAST]


async def test_future_hour_is_computed_every_time(shard_dsns: list[str], clock: Clock,
                                                  make_aggregator: MakeAggregator) -> None:
    future = clock.hour + 3
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    assert await get_hour(client, future) == (200, body(0, 0, 0))
    await write_overlapping(shard_dsns, future, clock.hour)
    assert await get_hour(client, future) == (200, OVERLAPPING_BODY)
    assert future not in client.app[PAST]
    assert future not in client.app[LIVE].hours


async def test_concurrent_requests_share_one_fan_out(shard_dsns: list[str], clock: Clock,
                                                     make_aggregator: MakeAggregator) -> None:
    past = clock.hour - 2
    await write_overlapping(shard_dsns, past, clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), listen_for_late_writes=False)
    answers = await asyncio.gather(*(get_hour(client, past) for _ in range(20)))
    assert set(answers) == {(200, OVERLAPPING_BODY)}
    assert sample(client, "reactions_fanout_seconds_count") == 1


async def test_bad_timestamps_get_400(shard_dsns: list[str], make_aggregator: MakeAggregator) -> None:
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    for query in ("", "?timestamp=", "?timestamp=abc", "?timestamp=-5", "?timestamp=1&timestamp=2",
                  "?timestamp=99999999999999999999", "?timestamp=253402300800000", "?timestamp=%C2%B2"):
        resp = await client.get("/analytics" + query)
        assert resp.status == 400, query
        assert (await resp.text()).endswith("\n")
    assert (await client.post("/analytics?timestamp=1")).status == 405
    assert (await client.get("/nowhere")).status == 404


async def test_fast_query_path_agrees_with_the_parser(shard_dsns: list[str], clock: Clock,
                                                      make_aggregator: MakeAggregator) -> None:
    await write(shard_dsns[0], clock.hour, ["zoe"], clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    ts = str(clock.now_ms)
    plain = await client.get(f"/analytics?timestamp={ts}")
    with_extra = await client.get(f"/analytics?x=1&timestamp={ts}")
    encoded = await client.get("/analytics?timestamp=" + "".join(f"%3{d}" for d in ts))
    assert {await plain.text(), await with_extra.text(), await encoded.text()} == {body(1, 1, 0)}


async def test_health_ready_and_metrics(shard_dsns: list[str], clock: Clock,
                                        make_aggregator: MakeAggregator) -> None:
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    await client.get("/analytics", params={"timestamp": str(clock.now_ms)})
    text = await (await client.get("/metrics")).text()
    for name in ('reactions_read_requests_total{kind="live"} 1', "reactions_refresh_lag_seconds",
                 "reactions_fanout_seconds_count", "reactions_shard_errors_total",
                 "reactions_past_invalidations_total", "reactions_refresh_seconds_count",
                 'reactions_shard_read{shard="s0",state="active"} 1',
                 'reactions_shard_read{shard="s2",state="active"} 1'):
        assert name in text, name
