"""Aggregator tests' helpers: an injectable clock, writes through the writer's real SQL, polling with a deadline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import asyncpg
from aiohttp.test_utils import TestClient

from aggregator.keys import METRICS
from aggregator.settings import Settings
from common.events import Event, Reaction
from common.hours import hour_of, hour_start_ms
from common.partitions import day_of_hour, ensure_days
from tests import waiting
from writer.db import commit_batch

# An hour far from the real clock (2027), so nothing depends on when tests run.
BASE_HOUR = 500_000
# Long enough for a loaded CI machine, short enough that a broken path fails fast.
DEADLINE_S = 15.0
# Fast refresh for tests (the production default is 1 s).
TEST_REFRESH_S = 0.02

class Clock:
    """``now`` for the aggregator, moved by the test."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    @property
    def hour(self) -> int:
        return hour_of(self.now_ms)


def body(unique_users: int, clicks: int, impressions: int) -> str:
    return f"unique_users,{unique_users}\nclicks,{clicks}\nimpressions,{impressions}\n"


def ts_in(hour: int, offset_ms: int = 1) -> int:
    return hour_start_ms(hour) + offset_ms


@dataclass(frozen=True)
class Write:
    user: str
    event: str = "click"


async def write(dsn: str, hour: int, writes: Sequence[Write | str], current_hour: int) -> None:
    """Commit one batch through the writer's SQL; ``current_hour`` is the writer's clock."""
    reactions = [
        Reaction(ts=ts_in(hour, i), hour=hour, username=w if isinstance(w, str) else w.user,
                 event=Event.CLICK if isinstance(w, str) or w.event == "click" else Event.IMPRESSION)
        for i, w in enumerate(writes)
    ]
    conn = await asyncpg.connect(dsn)
    try:
        await ensure_days(conn, [day_of_hour(hour)])
        await commit_batch(conn, reactions, current_hour)
    finally:
        await conn.close()


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, deadline_s: float = DEADLINE_S) -> None:
    await waiting.wait_until(check, what, deadline_s, poll_s=0.01)


async def get_hour(client: TestClient, hour: int) -> tuple[int, str]:
    resp = await client.get("/analytics", params={"timestamp": str(ts_in(hour, 12345))})
    return resp.status, await resp.text()


async def wait_for_body(client: TestClient, hour: int, expected: str) -> None:
    last: list[tuple[int, str]] = []

    async def matches() -> bool:
        last[:] = [await get_hour(client, hour)]
        return last[0] == (200, expected)

    try:
        await wait_until(matches, f"hour {hour} to read {expected!r}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer {last}") from None


def aggregator_settings(clock: Clock, **overrides: object) -> Settings:
    base = Settings(refresh_interval_s=TEST_REFRESH_S, shard_timeout_s=2.0, grace_s=300.0, clock=clock)
    return replace(base, **overrides)  # type: ignore[arg-type]


MakeAggregator = Callable[..., Awaitable[TestClient]]


def sample(client: TestClient, name: str, **labels: str) -> float:
    """One sample of the aggregator's metrics, 0 when the series does not exist."""
    return client.app[METRICS].registry.get_sample_value(name, labels) or 0.0


def read_counts(client: TestClient, kind: str) -> float:
    """How many reads the aggregator answered this way (live, past, miss, future...)."""
    return sample(client, "reactions_read_requests_total", kind=kind)
