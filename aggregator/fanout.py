"""Fan-out: one read per shard, concurrently, each bounded by the shard timeout.

Policy: a shard that raises or times out becomes a ``ShardFailure``; it never
cancels the other reads. Results are keyed by shard name, so merging does not
depend on the order of arrival.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from aggregator import db
from aggregator.merge import HourAnswer, merge
from aggregator.metrics import AggregatorMetrics
from aggregator.shards import ShardHandle

log = logging.getLogger(__name__)
T = TypeVar("T")
# Called with the shard name (to pick that shard's cursor) and a connection.
Fetch = Callable[[str, asyncpg.Connection], Awaitable[T]]


@dataclass(frozen=True)
class ShardFailure:
    shard: str
    reason: str


class IncompleteAnswer(Exception):
    """Some shard did not answer: the result must not be cached or served as complete."""

    def __init__(self, failures: Iterable[ShardFailure]) -> None:
        self.failures = tuple(sorted(failures, key=lambda f: f.shard))
        super().__init__("; ".join(f"shard {f.shard}: {f.reason}" for f in self.failures))


class FanOut:
    def __init__(self, timeout_s: float, metrics: AggregatorMetrics, cold_read_slots: int) -> None:
        self.timeout_s = timeout_s
        self._metrics = metrics
        # Cold reads share each shard's pool with the refresher; bounding them
        # keeps connections free so that the live hours and the version check
        # are refreshed however many cold reads are waiting.
        self._cold_reads = asyncio.Semaphore(cold_read_slots)

    async def gather(self, shards: Iterable[ShardHandle], fetch: Fetch[T]) -> tuple[dict[str, T], list[ShardFailure]]:
        """Run ``fetch`` on every shard; split answers from failures."""
        handles = list(shards)
        outcomes = await asyncio.gather(*(self._one(h, fetch) for h in handles))
        answers: dict[str, T] = {}
        failures: list[ShardFailure] = []
        for handle, outcome in zip(handles, outcomes, strict=True):
            if isinstance(outcome, ShardFailure):
                failures.append(outcome)
            else:
                answers[handle.name] = outcome
        return answers, failures

    async def _one(self, handle: ShardHandle, fetch: Fetch[T]) -> T | ShardFailure:
        try:
            async with asyncio.timeout(self.timeout_s), handle.pool.acquire() as conn:
                return await fetch(handle.name, conn)
        except TimeoutError:
            return self._failed(handle, f"no answer within {self.timeout_s:g} s")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return self._failed(handle, f"unreachable ({type(exc).__name__})")
        except Exception as exc:  # any other failure is still this shard's, never a 500
            return self._failed(handle, f"failed ({type(exc).__name__}: {exc})")

    def _failed(self, handle: ShardHandle, reason: str) -> ShardFailure:
        self._metrics.shard_errors.labels(handle.name).inc()
        log.warning("shard %s: %s", handle.name, reason)
        return ShardFailure(handle.name, reason)

    async def read_hour(self, shards: Iterable[ShardHandle], hour: int) -> HourAnswer:
        """A cold read of a whole hour from every shard; IncompleteAnswer if any fails."""
        async with self._cold_reads:
            started = time.monotonic()
            answers, failures = await self.gather(shards, lambda _name, conn: db.fetch_hour(conn, hour))
            self._metrics.fanout_seconds.observe(time.monotonic() - started)
        if failures:
            raise IncompleteAnswer(failures)
        return merge(answers)
