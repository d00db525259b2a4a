"""Past hours: computed once by fan-out, then cached until a late write changes them.

- Concurrent requests for the same uncached hour share one fan-out (single
  flight); the shared read is shielded, so one client leaving does not cancel
  it for the others.
- A series reads its uncached hours together (one statement per shard for
  all of them), yet each hour is still its own flight: joined, cached or kept
  out exactly as a one-hour read would be.
- A late-write notification drops the hour. One that arrives while the hour is
  being computed marks that computation dirty and takes it out of the
  in-flight map: its answer is served to the requests already waiting on it
  but not cached, and later requests start a new read.
- The version check (the backstop for missed notifications): every cached
  answer remembers each shard's stamp of the hour (its database identity and
  the hour's version there), read in the same snapshot as its users; any
  shard now at another stamp (a late write, a version gone backwards, another
  database behind the DSN) drops the hour.
- A cached answer is only as good as the last check that confirmed it: one
  that no check of some shard has confirmed within ``trust_s`` (the staleness
  bound) is dropped when asked for, and read again (or answered 503 while that
  shard does not answer). Notifications only make late writes visible sooner;
  the bound never depends on them (README, Invariants 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


async def _one_of(together: asyncio.Task[dict[int, HourAnswer]], hour: int) -> HourAnswer:
    """One hour's answer out of a read of many (shielded: the others still want it)."""
    return (await asyncio.shield(together))[hour]


class PastHours:
    def __init__(self, max_hours: int, fanout: FanOut, metrics: AggregatorMetrics, trust_s: float) -> None:
        self._cache: LRUCache[int, HourAnswer] = LRUCache(maxsize=max_hours)
        self._trust_s = trust_s
        # Per shard, time.monotonic() when the last version check that it answered started.
        self._checked_at: dict[str, float] = {}
        self._flights: dict[int, Flight] = {}
        # Every read still running, joinable or not, so that close() stops them all.
        self._running: set[asyncio.Task[Any]] = set()
        self._fanout = fanout
        self._metrics = metrics

    def __contains__(self, hour: int) -> bool:
        return hour in self._cache

    def cached(self, hour: int) -> bytes | None:
        answer = self._cache.get(hour)
        if answer is None:
            return None
        if not self._confirmed(answer, time.monotonic()):
            self.invalidate(hour, "unconfirmed")
            return None
        return answer.body

    def _confirmed(self, answer: HourAnswer, now: float) -> bool:
        oldest = now - self._trust_s
        return all(max(answer.read_at, self._checked_at.get(shard, 0.0)) >= oldest for shard in answer.stamps)

    async def compute(self, shards: ShardSet, hour: int) -> bytes:
        """Read ``hour`` from every shard (or join the read in progress); IncompleteAnswer if a shard fails."""
        flight = self._flights.get(hour) or self._take_off(shards, hour)
        answer = await asyncio.shield(flight.task)
        return answer.body

    async def compute_many(self, shards: ShardSet, hours: Sequence[int]) -> dict[int, bytes]:
        """Like ``compute`` for each of ``hours``; those no read is computing yet are read together.

        Raises the first IncompleteAnswer (or ColdReadsBusy) among them.
        """
        alone = [hour for hour in hours if hour not in self._flights]
        if alone:
            self._take_off_together(shards, alone)
        flights = [self._flights[hour] for hour in hours]
        answers = await asyncio.gather(*(asyncio.shield(f.task) for f in flights), return_exceptions=True)
        bodies: dict[int, bytes] = {}
        for hour, answer in zip(hours, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            bodies[hour] = answer.body
        return bodies

    def _take_off_together(self, shards: ShardSet, hours: Sequence[int]) -> None:
        """One read of every shard for all ``hours``, and a flight per hour that takes its own answer from it."""
        together = asyncio.create_task(self._fanout.read_hours(shards, hours), name=f"past-hours-{hours[0]}+")
        self._running.add(together)
        together.add_done_callback(self._running.discard)
        for hour in hours:
            self._fly(hour, asyncio.create_task(_one_of(together, hour), name=f"past-hour-{hour}"))

    def _take_off(self, shards: ShardSet, hour: int) -> Flight:
        return self._fly(hour, asyncio.create_task(self._fanout.read_hour(shards, hour), name=f"past-hour-{hour}"))

    def _fly(self, hour: int, task: asyncio.Task[HourAnswer]) -> Flight:
        flight = Flight(task)
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
        """Drop every cached hour whose stamp changed on some shard since it was read."""
        hours = list(self._cache)
        started = time.monotonic()
        if not hours:
            self._checked_at = dict.fromkeys(shards.names, started)  # nothing to confirm: nothing unconfirmed
            return
        answers, _failures = await self._fanout.gather(shards, lambda _name, conn: db.fetch_stamps(conn, hours))
        # A shard that failed is checked again on the next refresh; its cached
        # hours stay until the trust bound runs out.
        for name, stamps in answers.items():
            self._drop_changed(name, hours, stamps)
            self._checked_at[name] = started

    def _drop_changed(self, shard: str, hours: Sequence[int], stamps: db.HourStamps) -> None:
        for hour in hours:
            answer = self._peek(hour)
            if answer is not None and answer.stamps.get(shard) != stamps.stamp(hour):
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
