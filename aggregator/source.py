"""Where every hour's answer comes from: the one source both GET /analytics and the series ask.

For each hour asked, in this order:

- a live hour: from memory, no I/O (stale-marked while some shard fails or
  refreshes lag; no answer before its first complete read of every shard);
- a past hour: from the cache (aggregator/past.py), checked first if nothing
  confirmed it within the staleness bound;
- a past hour not cached: read cold, one flight per hour, then cached;
- an hour further ahead than the live hours: read cold, never cached.

A one-hour GET reads its cold hour alone (the one-hour statement); a series
reads all its cold hours together (one statement per shard). Either way an
hour is answered completely or not at all: a shard that did not answer
raises, and nothing incomplete is cached.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from aggregator.fanout import FanOut
from aggregator.live import LiveHour, LiveHours
from aggregator.merge import HourAnswer
from aggregator.past import ColdRead, PastHours
from aggregator.settings import Settings
from aggregator.shards import ShardSet
from common.hours import hour_of
from common.tasks import all_or_first_failure

# Told how an hour is answered ("live", "live_stale", "past", "miss", "future")
# as soon as that is known: a cold read is told before it starts, so it counts even if it then fails.
Tally = Callable[[str], None]


def no_tally(_kind: str) -> None:
    """A series counts itself once, not hour by hour."""


class HourNotReady(Exception):
    """A live hour that has had no complete read of every shard yet: no answer to give."""

    def __init__(self, hour: int, why: str) -> None:
        self.hour, self.why = hour, why
        super().__init__(f"hour {hour} has no complete read of every shard yet{why}")


@dataclass(frozen=True, slots=True)
class Answer:
    """One hour's body, and since when it is stale (a live hour only; None: fresh)."""

    body: bytes
    stale_since_ms: int | None = None


def oldest_stale(answers: Mapping[int, Answer]) -> int | None:
    """Since when the stalest of ``answers`` is stale, or None if every one is fresh."""
    return min((a.stale_since_ms for a in answers.values() if a.stale_since_ms is not None), default=None)


class HourSource:
    def __init__(self, live: LiveHours, past: PastHours, fanout: FanOut, settings: Settings) -> None:
        self._live = live
        self._past = past
        self._fanout = fanout
        self._settings = settings

    def fresh(self, hour: int) -> bytes | None:
        """The hot path: a live hour's body if it may be served unmarked; no I/O, no await."""
        live = self._live.hours.get(hour)
        if live is None:
            return None
        settings = self._settings
        return live.fresh_body(settings.clock(), settings.stale_after_ms)

    async def hour(self, shards: ShardSet, hour: int, tally: Tally) -> Answer:
        """One hour, a cold one read alone (IncompleteAnswer, ColdReadsBusy or HourNotReady otherwise)."""
        return (await self._answers(shards, (hour,), self._read_alone, tally))[hour]

    async def hours(self, shards: ShardSet, hours: Sequence[int]) -> dict[int, Answer]:
        """Every hour of ``hours``, the cold ones read together, or the first reason one cannot be answered."""
        return await self._answers(shards, hours, self._fanout.read_hours, no_tally)

    async def _answers(self, shards: ShardSet, hours: Sequence[int], cold: ColdRead,
                       tally: Tally) -> dict[int, Answer]:
        now_ms = self._settings.clock()
        current = hour_of(now_ms)
        found: dict[int, Answer] = {}
        past: list[int] = []
        ahead: list[int] = []
        for hour in hours:
            live = self._live.hours.get(hour)
            if live is not None:
                found[hour] = self._live_answer(live, now_ms, tally)
            else:
                (past if hour < current else ahead).append(hour)
        cached = await self._past.cached_many(shards, past)
        for hour, body in cached.items():
            tally("past")
            found[hour] = Answer(body)
        reads: list[Awaitable[Mapping[int, HourAnswer]]] = []
        uncached = [hour for hour in past if hour not in cached]
        if uncached:
            tally("miss")
            reads.append(self._past.compute(shards, uncached, cold))
        if ahead:  # further ahead than the live hours: read every time, never cached
            tally("future")
            reads.append(cold(shards, ahead))
        for answers in await all_or_first_failure(reads):
            found.update((hour, Answer(answer.body)) for hour, answer in answers.items())
        return found

    def _live_answer(self, live: LiveHour, now_ms: int, tally: Tally) -> Answer:
        """From memory only: the latest complete snapshot, and since when it is stale."""
        if live.body is None:
            raise HourNotReady(live.hour, live.why_incomplete)
        stale_since = live.stale_since(now_ms, self._settings.stale_after_ms)
        tally("live" if stale_since is None else "live_stale")
        return Answer(live.body, stale_since)

    async def _read_alone(self, shards: ShardSet, hours: Sequence[int]) -> dict[int, HourAnswer]:
        """The one-hour cold read, for the one hour a one-hour GET asks."""
        (hour,) = hours
        return {hour: await self._fanout.read_hour(shards, hour)}

