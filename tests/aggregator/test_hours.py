"""Which hours are live, and the turn of the hour with its grace period."""

from __future__ import annotations

import pytest

from aggregator.keys import LIVE, PAST
from aggregator.live import live_hours
from common.hours import MS_PER_HOUR, hour_start_ms
from tests.support.aggregator_app import (
    Clock,
    MakeAggregator,
    body,
    get_hour,
    read_counts,
    wait_for_body,
    wait_until,
    write,
)

H = 480_000
MINUTE = 60_000
GRACE_MS = 5 * MINUTE


@pytest.mark.parametrize(
    ("offset_ms", "expected"),
    [
        (0, (H - 1, H)),  # the turn: the previous hour is still live
        (GRACE_MS - 1, (H - 1, H)),
        (GRACE_MS, (H,)),  # grace over
        (MS_PER_HOUR // 2, (H,)),
        (MS_PER_HOUR - 5 * MINUTE - 1, (H,)),
        (MS_PER_HOUR - 5 * MINUTE, (H, H + 1)),  # writers accept events 5 minutes ahead
        (MS_PER_HOUR - 1, (H, H + 1)),
    ],
)
def test_live_hours(offset_ms: int, expected: tuple[int, ...]) -> None:
    assert live_hours(hour_start_ms(H) + offset_ms, GRACE_MS) == expected


async def test_previous_hour_stays_live_during_grace(shard_dsns: list[str], clock: Clock,
                                                     make_aggregator: MakeAggregator) -> None:
    previous = clock.hour
    clock.now_ms = hour_start_ms(previous + 1) + MINUTE  # one minute after the turn
    await write(shard_dsns[0], previous, ["ann"], previous)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), grace_s=GRACE_MS / 1000)
    assert set(client.app[LIVE].hours) == {previous, previous + 1}
    # A write for the previous hour from a writer already past the turn (it notifies too).
    await write(shard_dsns[1], previous, ["bob"], previous + 1)
    await wait_for_body(client, previous, body(2, 2, 0))
    assert read_counts(client, "miss") == 0 and read_counts(client, "live") >= 1

    clock.now_ms = hour_start_ms(previous + 1) + GRACE_MS  # grace over: the hour becomes a past hour

    async def retired() -> bool:
        return previous not in client.app[LIVE].hours

    await wait_until(retired, "the previous hour to leave the live set")
    assert previous in client.app[PAST]  # handed over complete, no cold read needed
    assert await get_hour(client, previous) == (200, body(2, 2, 0))
    assert read_counts(client, "past") == 1 and read_counts(client, "miss") == 0
    await write(shard_dsns[2], previous, ["cy"], previous + 1)  # later still: the cache follows
    await wait_for_body(client, previous, body(3, 3, 0))


async def test_next_hour_is_live_before_it_starts(shard_dsns: list[str], clock: Clock,
                                                  make_aggregator: MakeAggregator) -> None:
    current = clock.hour
    clock.now_ms = hour_start_ms(current + 1) - MINUTE
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    assert set(client.app[LIVE].hours) == {current, current + 1}
    await write(shard_dsns[0], current + 1, ["early"], current)
    await wait_for_body(client, current + 1, body(1, 1, 0))
    clock.now_ms = hour_start_ms(current + 1)  # the turn: the next hour was already loaded
    await write(shard_dsns[0], current + 1, ["on-time"], current + 1)
    await wait_for_body(client, current + 1, body(2, 2, 0))
    assert read_counts(client, "future") == read_counts(client, "miss") == 0
