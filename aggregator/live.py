"""The live hours: held in memory, refreshed incrementally, answered without any I/O.

Live are the current hour, the previous one during the grace period after the
hour turns, and the next one in the last minutes before it starts (writers
accept events a few minutes ahead of their clock). Each refresh asks every
shard, in one statement, for its counters, its version and the users first
seen above the version already held; the users go into one merged user set, so the
unique count is the size of the union, never a sum of per-shard counts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import repeat

from aggregator import db
from aggregator.fanout import FanOut
from aggregator.merge import HourAnswer, render_body
from aggregator.shards import ShardSet
from common.events import MAX_FUTURE_SKEW_MS
from common.hours import hour_of, hour_start_ms


def live_hours(now_ms: int, grace_ms: float, lead_ms: float = MAX_FUTURE_SKEW_MS) -> tuple[int, ...]:
    """The hours held in memory at ``now_ms``, oldest first."""
    current = hour_of(now_ms)
    hours = [current]
    if now_ms - hour_start_ms(current) < grace_ms:
        hours.insert(0, current - 1)
    if hour_start_ms(current + 1) - now_ms <= lead_ms:
        hours.append(current + 1)
    return tuple(hours)


@dataclass(slots=True)
class ShardCursor:
    """What one shard had for the hour at the last refresh it answered."""

    clicks: int = 0
    impressions: int = 0
    version: int = db.EMPTY_VERSION
    epoch: int = 0
    # The database these counters came from; another one behind the same DSN
    # means starting over (its versions say nothing about what we hold).
    identity: db.ShardIdentity | None = None


class LiveHour:
    """One live hour: the merged user set, per-shard counters and versions, the answer bytes."""

    __slots__ = ("body", "completed_at", "cursors", "hour", "incomplete_reason", "last_complete_ms", "needs_rebuild",
                 "stale_since_ms", "unrendered", "users")

    def __init__(self, hour: int) -> None:
        self.hour = hour
        # The merged users, as dict keys rather than a set: a dict holding only
        # strings is untracked by the cyclic GC, so collections never walk a
        # million entries (a set is always tracked and walked). Same semantics.
        self.users: dict[str, None] = {}
        self.cursors: dict[str, ShardCursor] = {}
        # The encoded answer, rebuilt only when a refresh changes something;
        # None until every shard has answered once (then there is no answer).
        self.body: bytes | None = None
        # Set while some shard fails: the time of the last complete refresh.
        self.stale_since_ms: int | None = None
        self.last_complete_ms: int | None = None
        self.completed_at = 0.0  # time.monotonic() when the last complete refresh started
        # Changes merged by incomplete refreshes: the body stays the last complete snapshot until then.
        self.unrendered = False
        # Why the last refresh was incomplete (the failing shards), for the 503's reason.
        self.incomplete_reason: str | None = None
        # A shard went back in time, is another database, or left the set: start over from scratch.
        self.needs_rebuild = False

    def version_of(self, shard: str) -> int:
        cursor = self.cursors.get(shard)
        return cursor.version if cursor is not None else db.EMPTY_VERSION

    def apply(self, shard: str, fresh: db.ShardHour) -> bool:
        """Merge one shard's increment; True if anything changed."""
        cursor = self.cursors.setdefault(shard, ShardCursor())
        if cursor.identity is None:
            cursor.identity, cursor.epoch = fresh.identity, fresh.epoch
        elif (fresh.identity != cursor.identity or fresh.version < cursor.version  # replaced, restored, truncated
              or fresh.epoch != cursor.epoch):  # repaired: users may be gone, read it whole
            self.needs_rebuild = True
            return False
        if fresh.version == cursor.version:
            return False
        self.users.update(zip(fresh.users, repeat(None)))
        cursor.clicks, cursor.impressions, cursor.version = fresh.clicks, fresh.impressions, fresh.version
        return True

    def finish(self, complete: bool, changed: bool, now_ms: int, started: float) -> None:
        """Close a refresh that started at ``started`` (monotonic): re-render if complete, and track staleness.

        An incomplete refresh never re-renders: what is served stale-marked is
        the last complete snapshot (docs/design.md, Invariants 4), never a mix.
        """
        if not complete:
            self.unrendered = self.unrendered or changed
            if self.body is not None and self.stale_since_ms is None:
                self.stale_since_ms = self.last_complete_ms
            return
        self.last_complete_ms, self.stale_since_ms, self.completed_at = now_ms, None, started
        if changed or self.unrendered or self.body is None:
            self.body = self.render()
            self.unrendered = False

    def render(self) -> bytes:
        cursors = self.cursors.values()
        return render_body(len(self.users), sum(c.clicks for c in cursors), sum(c.impressions for c in cursors))

    @property
    def why_incomplete(self) -> str:
        """`` (the failing shards)`` for a 503's reason, or nothing."""
        return f" ({self.incomplete_reason})" if self.incomplete_reason else ""

    def fresh_body(self, now_ms: int, stale_after_ms: float) -> bytes | None:
        """The answer if it may be served unmarked: complete, and young enough (docs/design.md, Invariants 5)."""
        if self.stale_since_ms is not None or self.last_complete_ms is None:
            return None
        return self.body if now_ms - self.last_complete_ms <= stale_after_ms else None

    def stale_since(self, now_ms: int, stale_after_ms: float) -> int | None:
        """Since when a served answer is stale (a shard failing, or refreshes lagging); None if fresh."""
        if self.stale_since_ms is not None:
            return self.stale_since_ms
        if self.last_complete_ms is not None and now_ms - self.last_complete_ms > stale_after_ms:
            return self.last_complete_ms
        return None

    def complete_answer(self) -> HourAnswer | None:
        """The hour as a cacheable past answer, if the last refresh was complete."""
        if self.body is None or self.stale_since_ms is not None or self.needs_rebuild:
            return None
        stamps = {name: db.Stamp(c.identity, c.version, c.epoch)
                  for name, c in self.cursors.items() if c.identity is not None}
        if len(stamps) != len(self.cursors):
            return None
        return HourAnswer(self.body, stamps, self.completed_at)


class LiveHours:
    """The live hours by hour number; ``hours`` is what GET handlers read."""

    def __init__(self, fanout: FanOut) -> None:
        self._fanout = fanout
        self.hours: dict[int, LiveHour] = {}

    def forget_shards(self, removed: Iterable[str]) -> None:
        """Rebuild every live hour holding a cursor for a removed shard.

        A shard whose DSN changed is reported removed (and added under the same
        name): its old cursor says nothing about the new database.
        """
        gone = frozenset(removed)
        for live in self.hours.values():
            if not gone.isdisjoint(live.cursors):
                live.needs_rebuild = True

    async def refresh(self, shards: ShardSet, wanted: Iterable[int], now_ms: int,
                      on_retired: Callable[[LiveHour], None]) -> bool:
        """Refresh every live hour; True if every shard answered for every hour.

        An hour that stops being live goes to ``on_retired`` before it leaves,
        so that its answer can become a cached past hour without a gap.
        """
        wanted = tuple(wanted)
        for live in [live for hour, live in self.hours.items() if hour not in wanted]:
            on_retired(live)
            del self.hours[live.hour]
        for hour in wanted:
            self.hours.setdefault(hour, LiveHour(hour))
        results = await asyncio.gather(*(self._refresh_hour(shards, h, now_ms) for h in wanted))
        return all(results)

    async def _refresh_hour(self, shards: ShardSet, hour: int, now_ms: int) -> bool:
        live = self.hours[hour]
        if live.needs_rebuild or not shards.names.issuperset(live.cursors):
            return await self._rebuild(shards, live, now_ms)
        return await self._refresh(shards, live, now_ms)

    async def _refresh(self, shards: ShardSet, live: LiveHour, now_ms: int) -> bool:
        started = time.monotonic()
        answers, failures = await self._fanout.gather(
            shards, lambda name, conn: db.fetch_hour_since(conn, live.hour, live.version_of(name))
        )
        changed = False
        for name, fresh in answers.items():
            changed = live.apply(name, fresh) or changed
        complete = not failures and not live.needs_rebuild
        live.incomplete_reason = "; ".join(f"shard {f.shard}: {f.reason}" for f in failures) or None
        live.finish(complete, changed, now_ms, started)
        return complete

    async def _rebuild(self, shards: ShardSet, old: LiveHour, now_ms: int) -> bool:
        """Read the hour afresh into a new LiveHour; swap it in only once complete."""
        fresh = LiveHour(old.hour)
        if await self._refresh(shards, fresh, now_ms) and not fresh.needs_rebuild:
            self.hours[old.hour] = fresh
            return True
        old.incomplete_reason = fresh.incomplete_reason or "a shard changed under the hour: reading it again"
        old.finish(False, False, now_ms, time.monotonic())
        return False
