"""GET /analytics/series: each row is the one-hour answer; cold hours read together; 400, 503 and stale."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from aggregator import db
from aggregator.keys import PAST
from aggregator.series import MAX_SERIES_HOURS
from common.hours import hour_start_ms
from sharding.local.postgres import LocalPostgres
from tests import waiting
from tests.aggregator.test_faults import migrated
from tests.aggregator.test_reads import OVERLAPPING_BODY, write_overlapping
from tests.support.aggregator_app import (
    Clock,
    MakeAggregator,
    body,
    get_hour,
    read_counts,
    sample,
    ts_in,
    wait_for_body,
    wait_until,
    write,
)

HEADER = "hour_start_ms,unique_users,clicks,impressions"
# Longer than any test: the background refresh (and its version check) never runs.
NO_REFRESH_S = 3600.0


async def get_series(client: TestClient, first: int, last: int, offset_ms: int = 1) -> tuple[int, str, dict[str, str]]:
    resp = await client.get("/analytics/series", params={"from": str(ts_in(first, offset_ms)),
                                                         "to": str(ts_in(last, offset_ms))})
    return resp.status, await resp.text(), dict(resp.headers)


def row_of(hour: int, one_hour_body: str) -> str:
    counts = dict(line.split(",") for line in one_hour_body.splitlines())
    return f"{hour_start_ms(hour)},{counts['unique_users']},{counts['clicks']},{counts['impressions']}"


def rows(text: str) -> list[str]:
    lines = text.splitlines()
    assert lines[0] == HEADER
    return lines[1:]


async def test_every_row_is_the_one_hour_answer(shard_dsns: list[str], clock: Clock,
                                                make_aggregator: MakeAggregator) -> None:
    first, last = clock.hour - 3, clock.hour + 2  # past hours, the live hour, hours further ahead
    for hour in (first, clock.hour - 1, clock.hour, last):
        await write_overlapping(shard_dsns, hour, clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    await wait_for_body(client, clock.hour, OVERLAPPING_BODY)
    status, text, headers = await get_series(client, first, last, offset_ms=1_234_567)
    assert status == 200, text
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    assert headers["Content-Location"] == f"/analytics/series?from={hour_start_ms(first)}&to={hour_start_ms(last)}"
    assert "X-Reactions-Stale" not in headers
    expected = []
    for hour in range(first, last + 1):
        one_status, one_body = await get_hour(client, hour)
        assert one_status == 200
        expected.append(row_of(hour, one_body))
    assert rows(text) == expected
    assert expected[0] == f"{hour_start_ms(first)},5,6,3" and expected[1] == f"{hour_start_ms(first + 1)},0,0,0"
    assert text.endswith("\n")
    assert first in client.app[PAST] and last not in client.app[PAST], "past hours cached, hours ahead never"
    assert read_counts(client, "series") == 1


async def test_cold_hours_are_read_together_then_served_from_the_cache(shard_dsns: list[str], clock: Clock,
                                                                       make_aggregator: MakeAggregator) -> None:
    first, last = clock.hour - 30, clock.hour - 7
    await write_overlapping(shard_dsns, first + 5, clock.hour)
    # A trust bound long enough that a loaded machine's slow version check never drops the cached hours.
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), listen_for_late_writes=False, live_max_lag_s=10.0)
    status, text, _ = await get_series(client, first, last)
    assert status == 200 and len(rows(text)) == 24
    assert rows(text)[5] == row_of(first + 5, OVERLAPPING_BODY)
    # One read of every shard for the 24 cold hours, none hour by hour.
    assert sample(client, "reactions_series_fanout_seconds_count") == 1
    assert sample(client, "reactions_fanout_seconds_count") == 0
    assert all(hour in client.app[PAST] for hour in range(first, last + 1))
    assert (await get_series(client, first, last))[1] == text
    assert sample(client, "reactions_series_fanout_seconds_count") == 1, "the second series came from the cache"
    assert await get_hour(client, first + 5) == (200, OVERLAPPING_BODY)
    assert read_counts(client, "past") == 1 and read_counts(client, "miss") == 0


@pytest.mark.parametrize(("query", "reason"), [
    ("", "from is required"),
    ("?from=1000", "to is required"),
    ("?to=1000", "from is required"),
    ("?from=abc&to=1000", "from must be an integer"),
    ("?from=1000&to=-5", "to must be an integer"),
    ("?from=1000&to=1.5", "to must be an integer"),
    ("?from=1&from=2&to=3", "from must be given once"),
    ("?from=7200000&to=3599999", "reversed"),
    (f"?from=0&to={MAX_SERIES_HOURS * 3_600_000}", "at most 744"),
    ("?from=0&to=253402300800000", "before year 10000"),
    ("?from=0&to=1&timestamp=5", "unknown parameter: timestamp"),
])
async def test_bad_ranges_get_400_with_a_one_line_reason(shard_dsns: list[str], make_aggregator: MakeAggregator,
                                                         query: str, reason: str) -> None:
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    resp = await client.get("/analytics/series" + query)
    text = await resp.text()
    assert resp.status == 400 and reason in text, text
    assert text.endswith("\n") and text.count("\n") == 1
    assert sample(client, "reactions_read_refused_total", status="400") == 1


async def test_a_month_of_hours_is_the_longest_series(shard_dsns: list[str], clock: Clock,
                                                      make_aggregator: MakeAggregator) -> None:
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    status, text, _ = await get_series(client, clock.hour - MAX_SERIES_HOURS, clock.hour - 1)
    assert status == 200 and len(rows(text)) == MAX_SERIES_HOURS
    assert (await get_series(client, clock.hour - MAX_SERIES_HOURS - 1, clock.hour - 1))[0] == 400


async def test_a_shard_down_makes_the_series_503_and_the_live_hour_stale(
    shard_dsns: list[str], clock: Clock, make_aggregator: MakeAggregator,
    start_postgres: Callable[[], LocalPostgres],
) -> None:
    server = start_postgres()
    own = await migrated(server)
    await write(own, clock.hour - 2, ["bob"], clock.hour)
    await write(shard_dsns[0], clock.hour, ["ann"], clock.hour)
    client = await make_aggregator(shard_dsns=(shard_dsns[0], own), shard_timeout_s=1.0)
    await wait_for_body(client, clock.hour, body(1, 1, 0))
    server.stop()

    async def stale() -> bool:
        status, _, headers = await get_series(client, clock.hour, clock.hour)
        return status == 200 and headers.get("X-Reactions-Stale") == "true" and "X-Reactions-Stale-Since" in headers

    await wait_until(stale, "a series of the live hour marked stale")
    status, text, headers = await get_series(client, clock.hour - 3, clock.hour)
    assert status == 503 and "shard s1" in text and headers["Retry-After"] == "1", text
    assert clock.hour - 2 not in client.app[PAST], "an incomplete hour is never cached"
    server.start()

    async def whole_again() -> bool:
        status, _, headers = await get_series(client, clock.hour - 3, clock.hour)
        return status == 200 and "X-Reactions-Stale" not in headers

    await wait_until(whole_again, "the series whole and unmarked once the shard is back")
    status, text, headers = await get_series(client, clock.hour - 3, clock.hour)
    assert rows(text)[1] == row_of(clock.hour - 2, body(1, 1, 0))


def hold_series_reads(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Make every many-hour read wait, once it has its answer, until the test lets it go."""
    read, let_go = asyncio.Event(), asyncio.Event()
    fetch_hours = db.fetch_hours

    async def held(conn: asyncpg.Connection, hours: Sequence[int]) -> db.ShardHours:
        answer = await fetch_hours(conn, hours)
        read.set()
        await let_go.wait()
        return answer

    monkeypatch.setattr(db, "fetch_hours", held)
    return read, let_go


async def test_a_notification_during_the_read_keeps_that_hour_out(shard_dsns: list[str], clock: Clock,
                                                                  make_aggregator: MakeAggregator,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    first, last = clock.hour - 6, clock.hour - 2
    await write(shard_dsns[0], first + 1, ["old"], clock.hour)
    read, let_go = hold_series_reads(monkeypatch)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), refresh_interval_s=NO_REFRESH_S,
                                   shard_timeout_s=60.0, listen_for_late_writes=False)
    series = asyncio.create_task(get_series(client, first, last))
    try:
        await waiting.wait_until(read.is_set, "the series' read to have its answer")
        one_hour = asyncio.create_task(get_hour(client, last))  # joins the series' read of that hour
        await asyncio.sleep(0.05)
        client.app[PAST].invalidate(first + 1, "notify")  # a late write to one of the hours lands
    finally:
        let_go.set()
    status, text, _ = await series
    assert status == 200 and rows(text)[1] == row_of(first + 1, body(1, 1, 0))
    assert await one_hour == (200, body(0, 0, 0))
    assert sample(client, "reactions_fanout_seconds_count") == 0, "the one-hour GET joined the series' read"
    assert first + 1 not in client.app[PAST]
    assert all(hour in client.app[PAST] for hour in (first, first + 2, last))


async def test_a_series_not_read_within_its_bound_is_503_with_the_reason(shard_dsns: list[str], clock: Clock,
                                                                         make_aggregator: MakeAggregator,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _read, let_go = hold_series_reads(monkeypatch)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), shard_timeout_s=30.0, series_timeout_s=0.3)
    started = time.monotonic()
    try:
        status, text, headers = await get_series(client, clock.hour - 48, clock.hour - 1)
    finally:
        let_go.set()
    assert status == 503 and "not read within 0.3 s (48 hours)" in text and headers["Retry-After"] == "1", text
    assert time.monotonic() - started < 2.0


async def test_a_read_the_server_cancels_for_its_timeout_says_so(shard_dsns: list[str], clock: Clock,
                                                                 make_aggregator: MakeAggregator,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async def slow(conn: asyncpg.Connection, hours: Sequence[int]) -> db.ShardHours:
        await conn.execute("SELECT pg_sleep(30)")  # as a month of many users would take
        raise AssertionError("PostgreSQL's statement_timeout should have ended it")

    monkeypatch.setattr(db, "fetch_hours", slow)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), shard_timeout_s=2.0, series_timeout_s=5.0)
    status, text, _ = await get_series(client, clock.hour - 744, clock.hour - 1)
    assert status == 503 and "shard s0: too slow: the statement ran past 1600 ms" in text, text
