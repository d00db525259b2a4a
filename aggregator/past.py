"""Past hours: computed once by fan-out, then cached until a late write changes them.

- Concurrent requests for the same uncached hour share one fan-out (single
  flight); the shared read is shielded, so one client leaving does not cancel
  it for the others.
- A late-write notification drops the hour. One that arrives while the hour is
  being computed marks that computation dirty and takes it out of the
  in-flight map: its answer is served to the requests already waiting on it
  but not cached, and later requests start a new read.
- The version check (the backstop for missed notifications): every cached
  answer remembers each shard's version of the hour, read in the same
  snapshot as its users; any shard now at another version drops the hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cachetools import Cache, LRUCache

from aggregator import db
from aggregator.fanout import FanOut
from aggregator.merge import HourAnswer
from aggregator.metrics import AggregatorMetrics
from aggregator.shards import ShardSet

log = logging.getLogger(__name__)


@dataclass
class Flight:
    """One fan-out in progress for an hour."""

    task: asyncio.Task[HourAnswer]
    dirty: bool = False


class PastHours:
    def __init__(self, max_hours: int, fanout: FanOut, metrics: AggregatorMetrics) -> None:
        self._cache: LRUCache[int, HourAnswer] = LRUCache(maxsize=max_hours)
        self._flights: dict[int, Flight] = {}
        # Every read still running, joinable or not, so that close() stops them all.
        self._running: set[asyncio.Task[HourAnswer]] = set()
        self._fanout = fanout
        self._metrics = metrics

    def __contains__(self, hour: int) -> bool:
        return hour in self._cache

    def cached(self, hour: int) -> bytes | None:
        answer = self._cache.get(hour)
        return answer.body if answer is not None else None

    async def compute(self, shards: ShardSet, hour: int) -> bytes:
        """Read ``hour`` from every shard (or join the read in progress); IncompleteAnswer if a shard fails."""
        flight = self._flights.get(hour) or self._take_off(shards, hour)
        answer = await asyncio.shield(flight.task)
        return answer.body

    def _take_off(self, shards: ShardSet, hour: int) -> Flight:
        flight = Flight(asyncio.create_task(self._fanout.read_hour(shards, hour), name=f"past-hour-{hour}"))
        self._flights[hour] = flight
        self._running.add(flight.task)
        flight.task.add_done_callback(lambda _task: self._land(hour, flight))
        return flight

    def _land(self, hour: int, flight: Flight) -> None:
        self._running.discard(flight.task)
        if self._flights.get(hour) is flight:
            del self._flights[hour]
        if flight.task.cancelled() or flight.task.exception() is not None:
            return  # an incomplete answer is never cached
        if not flight.dirty:
            self._cache[hour] = flight.task.result()

    def invalidate(self, hour: int, cause: str) -> None:
        """Forget ``hour``: a late write (notification or version change) touched it."""
        if self._cache.pop(hour, None) is not None:
            self._metrics.invalidations.labels(cause).inc()
        flight = self._flights.pop(hour, None)
        if flight is not None:  # its answer may predate the write: not joined, not cached
            flight.dirty = True

    def clear(self, cause: str) -> None:
        """Forget everything (the set of shards changed)."""
        for hour in list(self._cache):
            self.invalidate(hour, cause)
        for flight in self._flights.values():
            flight.dirty = True
        self._flights.clear()

    def seed(self, hour: int, answer: HourAnswer) -> None:
        """Cache an answer known complete (an hour that just stopped being live)."""
        if hour not in self._flights:
            self._cache[hour] = answer

    async def check_versions(self, shards: ShardSet) -> None:
        """Drop every cached hour whose version changed on some shard since it was read."""
        hours = list(self._cache)
        if not hours:
            return
        answers, _failures = await self._fanout.gather(shards, lambda _name, conn: db.fetch_versions(conn, hours))
        # A shard that failed is checked on the next refresh; its cached hours stay meanwhile.
        for name, versions in answers.items():
            self._drop_changed(name, hours, versions)

    def _drop_changed(self, shard: str, hours: Sequence[int], versions: dict[int, int]) -> None:
        for hour in hours:
            answer = self._peek(hour)
            if answer is not None and answer.versions.get(shard, db.EMPTY_VERSION) != versions.get(
                hour, db.EMPTY_VERSION
            ):
                log.info("hour %d changed on shard %s: dropped from the cache", hour, shard)
                self.invalidate(hour, "version")

    def _peek(self, hour: int) -> HourAnswer | None:
        """The cached answer without making it recently used (the check is no use)."""
        if hour not in self._cache:
            return None
        return Cache.__getitem__(self._cache, hour)  # type: ignore[no-any-return]

    async def close(self) -> None:
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
