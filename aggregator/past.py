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
- A cached answer is only as good as the last check that confirmed it: a
  check confirms an hour when every shard of its answer answered with the
  same stamp. An answer that nothing confirmed within ``trust_s`` (the
  staleness bound) is checked again before it is served (one statement per
  shard); if a shard does not answer, it is dropped and read again, which
  answers 503 while that shard is down. Notifications only make late writes
  visible sooner; the bound never depends on them (docs/design.md, Invariants 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cachetools import Cache, LRUCache

from aggregator import db
from aggregator.fanout import FanOut, IncompleteAnswer, ShardFailure
from aggregator.merge import HourAnswer
from aggregator.metrics import AggregatorMetrics
from aggregator.shards import ShardSet
from common.tasks import all_or_first_failure

log = logging.getLogger(__name__)


@dataclass
class Flight:
    """One fan-out in progress for an hour."""

    task: asyncio.Task[HourAnswer]
    dirty: bool = False


@dataclass(slots=True)
class CachedHour:
    """A complete answer and when it was last known right: read, or confirmed by a check that started then."""

    answer: HourAnswer
    confirmed_at: float


# Reads whole hours from every shard: the one-hour statement for a one-hour GET, one for many for a series.
ColdRead = Callable[[ShardSet, Sequence[int]], Coroutine[Any, Any, Mapping[int, HourAnswer]]]


async def _one_of(together: asyncio.Task[Mapping[int, HourAnswer]], hour: int) -> HourAnswer:
    """One hour's answer out of a read of many (shielded: the others still want it)."""
    return (await asyncio.shield(together))[hour]


async def _landed(flights: Mapping[int, Flight]) -> dict[int, HourAnswer]:
    """Each flight's answer (shielded: others may share it), or the first failure once all have ended."""
    answers = await all_or_first_failure([asyncio.shield(f.task) for f in flights.values()])
    return dict(zip(flights, answers, strict=True))


class PastHours:
    def __init__(self, max_hours: int, fanout: FanOut, metrics: AggregatorMetrics, trust_s: float) -> None:
        self._cache: LRUCache[int, CachedHour] = LRUCache(maxsize=max_hours)
        self._trust_s = trust_s
        self._flights: dict[int, Flight] = {}
        # Every read still running, joinable or not, so that close() stops them all.
        self._running: set[asyncio.Task[Any]] = set()
        self._fanout = fanout
        self._metrics = metrics

    def __contains__(self, hour: int) -> bool:
        return hour in self._cache

    async def cached(self, shards: ShardSet, hour: int) -> bytes | None:
        """The cached answer, if it holds every shard read now and is confirmed within the trust bound.

        An answer past the bound is checked now; None means: read the hour.
        IncompleteAnswer if a shard did not answer that check.
        """
        return (await self.cached_many(shards, [hour])).get(hour)

    async def cached_many(self, shards: ShardSet, hours: Sequence[int]) -> dict[int, bytes]:
        """``cached`` for many hours, with one check of every shard for all those past the bound."""
        found: dict[int, bytes] = {}
        unconfirmed: list[int] = []
        oldest, names = time.monotonic() - self._trust_s, shards.names
        for hour in hours:
            entry = self._cache.get(hour)
            if entry is None:
                continue
            if entry.answer.stamps.keys() != names:
                self.invalidate(hour, "topology")
            elif entry.confirmed_at < oldest:
                unconfirmed.append(hour)
            else:
                found[hour] = entry.answer.body
        if unconfirmed:
            confirmed, failures = await self._check(shards, unconfirmed)
            for hour in unconfirmed:
                entry = self._peek(hour)
                if entry is not None and hour in confirmed:
                    found[hour] = entry.answer.body
                elif entry is not None:  # some shard did not answer the check: reading it again would not either
                    self.invalidate(hour, "unconfirmed")
                    raise IncompleteAnswer(failures)
        return found

    def compute(self, shards: ShardSet, hours: Sequence[int],
                     read: ColdRead) -> Coroutine[Any, Any, dict[int, HourAnswer]]:
        """Every one of ``hours`` read from every shard: those no read is computing yet by one ``read`` of them all.

        The reads take off now, so that a request arriving next joins them;
        each hour joins the read already computing it, if any. The answers,
        once awaited, or the first IncompleteAnswer (or ColdReadsBusy) among them.
        """
        alone = [hour for hour in hours if hour not in self._flights]
        if alone:
            self._take_off(shards, alone, read)
        return _landed({hour: self._flights[hour] for hour in hours})

    def _take_off(self, shards: ShardSet, hours: Sequence[int], read: ColdRead) -> None:
        """One read of every shard for all ``hours``, and a flight per hour that takes its own answer from it."""
        together = asyncio.create_task(read(shards, hours), name=f"past-hours-{hours[0]}+")
        self._running.add(together)
        together.add_done_callback(self._running.discard)
        for hour in hours:
            self._fly(hour, asyncio.create_task(_one_of(together, hour), name=f"past-hour-{hour}"))

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
            answer = flight.task.result()
            self._cache[hour] = CachedHour(answer, answer.read_at)

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
            self._cache[hour] = CachedHour(answer, answer.read_at)

    async def check_versions(self, shards: ShardSet) -> None:
        """Drop every cached hour whose stamp changed on some shard; confirm the others."""
        hours = list(self._cache)
        if hours:
            await self._check(shards, hours)  # failures: those hours keep their last confirmation, for now

    async def _check(self, shards: ShardSet, hours: Sequence[int]) -> tuple[set[int], list[ShardFailure]]:
        """One version check of ``hours`` (those cached when it starts, never those cached meanwhile).

        Returns the hours it confirmed (every shard of their answer answered, with the same stamp),
        and the shards that did not answer.
        """
        started = time.monotonic()
        answers, failures = await self._fanout.gather(shards, lambda _name, conn: db.fetch_stamps(conn, hours))
        # A shard that failed confirms nothing: its hours keep their last
        # confirmation until the trust bound runs out.
        confirmed: set[int] = set()
        for hour in hours:
            entry = self._peek(hour)
            if entry is None:
                continue
            changed = [name for name, stamps in answers.items() if entry.answer.stamps.get(name) != stamps.stamp(hour)]
            if changed:
                log.info("hour %d changed on shard %s: dropped from the cache", hour, ", ".join(changed))
                self.invalidate(hour, "version")
            elif set(entry.answer.stamps) <= answers.keys():
                entry.confirmed_at = max(entry.confirmed_at, started)
                confirmed.add(hour)
        return confirmed, failures

    def _peek(self, hour: int) -> CachedHour | None:
        """The cached entry without making it recently used (the check is no use)."""
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
