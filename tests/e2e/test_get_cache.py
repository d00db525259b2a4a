"""nginx's GET cache in a real cluster: the staleness bound with the cache on, and reads with every aggregator down."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import aiohttp
import pytest

from aggregator.settings import Settings as AggregatorSettings
from common.hours import MS_PER_HOUR, now_ms
from sharding.local.cluster import LocalCluster
from sharding.local.processes import alive
from tests.support.cluster import base_url, own_past_hour_ts, post, start_cluster, unique_users
from tests.waiting import wait_until

# docs/design.md, Invariants 5: from a 204 to an unmarked answer at the entry point.
STALENESS_BOUND_S = 2.0


@pytest.fixture(scope="module")
def default_refresh_cluster() -> Iterator[LocalCluster]:
    """Aggregators at the production refresh interval, so the bound is tested as deployed (cache included)."""
    interval_ms = str(int(1000 * AggregatorSettings.refresh_interval_s))
    yield from start_cluster(shards=2, aggregators=2, env={"REACTIONS_REFRESH_INTERVAL_MS": interval_ms})


async def answer(session: aiohttp.ClientSession, base: str, ts: int) -> tuple[int, str, dict[str, str]]:
    async with session.get(f"{base}/analytics?timestamp={ts}") as resp:
        return resp.status, await resp.text(), dict(resp.headers)


def clicks(body: str) -> int:
    return int(dict(line.split(",") for line in body.splitlines())["clicks"])


async def test_an_acknowledged_click_is_in_every_unmarked_answer_after_the_bound(
        default_refresh_cluster: LocalCluster) -> None:
    base, ts = base_url(default_refresh_cluster), now_ms()
    if now_ms() % MS_PER_HOUR > MS_PER_HOUR - 10_000:
        pytest.skip("too close to the end of the hour: the test needs a few seconds of it")
    async with aiohttp.ClientSession() as session:
        first: list[str] = []

        async def answered() -> bool:
            status, body, headers = await answer(session, base, ts)
            first.append(body)
            return status == 200 and "X-Reactions-Stale" not in headers

        await wait_until(answered, "the live hour answers")  # and it is in the cache from here on
        before = clicks(first[-1])
        assert await post(session, f"{base}/analytics?timestamp={ts}&user={unique_users(1)[0]}&click") == 204
        acknowledged = time.monotonic()
        late: list[tuple[float, int]] = []

        async def past_the_bound() -> bool:
            sent = time.monotonic()
            status, body, headers = await answer(session, base, ts)
            if status == 200 and "X-Reactions-Stale" not in headers and sent - acknowledged >= STALENESS_BOUND_S:
                late.append((sent - acknowledged, clicks(body)))
            return len(late) >= 10

        # Every unmarked answer asked for after the bound counts the click.
        await wait_until(past_the_bound, "unmarked answers after the bound", deadline_s=10.0)
        assert all(seen == before + 1 for _, seen in late), late


@pytest.fixture
def cluster_to_break() -> Iterator[LocalCluster]:
    """A cluster of its own: this test kills its aggregators."""
    yield from start_cluster(shards=1, aggregators=2)


async def test_with_every_aggregator_down_a_cached_hour_is_stale_and_another_503(
        cluster_to_break: LocalCluster) -> None:
    cluster = cluster_to_break
    base, cached = base_url(cluster), own_past_hour_ts()
    never_asked = cached + MS_PER_HOUR
    async with aiohttp.ClientSession() as session:
        assert await post(session, f"{base}/analytics?timestamp={cached}&user={unique_users(1)[0]}&click") == 204

        async def counted() -> bool:
            status, body, _ = await answer(session, base, cached)
            return status == 200 and clicks(body) == 1

        await wait_until(counted, "the click is counted")
        for record in cluster.registry.all("aggregator"):
            os.kill(record.pid, signal.SIGKILL)
        await wait_until(lambda: not any(alive(r) for r in cluster.registry.all("aggregator")),
                         "every aggregator is gone")
        started = time.monotonic()

        async def marked() -> bool:
            status, body, headers = await answer(session, base, cached + 1)
            assert status == 200 and clicks(body) == 1, (status, body)
            return headers.get("X-Reactions-Stale") == "true" and "X-Reactions-Stale-Since" in headers

        await wait_until(marked, "the cached hour is served marked stale", deadline_s=5.0)
        status, _, headers = await answer(session, base, never_asked)
        assert status == 503 and headers["Retry-After"] == "1"
        assert time.monotonic() - started < 5.0
