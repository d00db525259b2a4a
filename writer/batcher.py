"""Group commit: many requests, one transaction.

Requests append their reaction to the open batch and wait on a future. Each
flusher takes the open batch as soon as it is free (natural group commit:
while one commit waits for its WAL flush, the next batch fills up), commits it
in one transaction, then resolves every future of the batch: with None once
committed, with the error if the commit failed. ``batch_max_wait_ms`` bounds
how long a flusher lingers for a fuller batch when the one it holds is small
and another commit is already in flight.

Every event has one of three outcomes (README, Invariants): committed (the
future resolves), ``NotStored`` (certainly not committed: refused before it
reached the database, or rolled back by it) or ``OutcomeUnknown`` (the commit
was sent and its answer lost). An event that waited longer than
``max_queue_wait_s`` for its commit to start is refused, never sent: so that
every request is answered within queue wait + commit bound.

An event also carries its deadline (writer/settle.py): the last moment it may
commit. One already past it is refused (``TooLate``), never sent; a batch is
committed with the earliest deadline of its events, which PostgreSQL enforces
(writer/db.py ``guard_commit``). Earliest, not split by deadline: the events
of a batch arrived within milliseconds of each other, so their deadlines are
that close too, and a batch that would commit past the first of them is one
whose commit is far slower than every bound anyway.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from common.events import Reaction

log = logging.getLogger(__name__)

# A batch and its deadline (seconds since the epoch; inf: none).
CommitFn = Callable[[Sequence[Reaction], float], Awaitable[None]]


class CommitFailed(Exception):
    """The event was not acknowledged; the subclass says whether it may be stored."""


class NotStored(CommitFailed):
    """Certainly not committed: answer 503 with Retry-After; a retry cannot count it twice."""


class OutcomeUnknown(CommitFailed):
    """The commit was sent and its outcome is unknown: the client retries with the same key."""


class Overloaded(NotStored):
    """The queue is full."""


class ShuttingDown(NotStored):
    """The writer no longer takes events."""


class TooLate(NotStored):
    """Past its deadline (README, Invariants 8): refused unsent (``where="writer"``) or rolled back by PostgreSQL."""

    def __init__(self, reason: str, where: str = "writer") -> None:
        super().__init__(reason)
        self.where = where


def late(deadline: float) -> TooLate:
    return TooLate(f"past its deadline by {time.time() - deadline:.3f} s: it will never be stored; retry")


@dataclass
class Batch:
    reactions: list[Reaction] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    # When each event joined (monotonic, so non-decreasing): for the queue-wait bound.
    arrived: list[float] = field(default_factory=list)
    opened_at: float = field(default_factory=time.monotonic)
    # The last moment each event may commit (seconds since the epoch; inf: none).
    deadlines: list[float] = field(default_factory=list)

    def split(self, at: int) -> Batch:
        """Keep the first ``at`` events here; return the others as a new batch."""
        opened_at = self.arrived[at] if at < len(self.arrived) else time.monotonic()
        rest = Batch(self.reactions[at:], self.waiters[at:], self.arrived[at:], opened_at, self.deadlines[at:])
        del self.reactions[at:], self.waiters[at:], self.arrived[at:], self.deadlines[at:]
        return rest

    def take_late(self, now: float) -> Batch:
        """Remove the events past their deadline; return them as a batch of their own."""
        late = Batch()
        keep = Batch(opened_at=self.opened_at)
        for row in zip(self.reactions, self.waiters, self.arrived, self.deadlines, strict=True):
            target = late if row[3] < now else keep
            target.reactions.append(row[0])
            target.waiters.append(row[1])
            target.arrived.append(row[2])
            target.deadlines.append(row[3])
        self.reactions, self.waiters, self.arrived, self.deadlines = (
            keep.reactions, keep.waiters, keep.arrived, keep.deadlines)
        return late

    @property
    def deadline(self) -> float:
        return min(self.deadlines, default=math.inf)


@dataclass
class BatchStats:
    """What the flushers report per batch, for /metrics."""

    on_commit: Callable[[int, float], None] = lambda size, seconds: None
    on_failure: Callable[[int, BaseException], None] = lambda size, exc: None


class GroupCommitter:
    def __init__(
        self,
        commit: CommitFn,
        *,
        max_events: int,
        max_wait_s: float,
        queue_max: int,
        flushers: int,
        max_queue_wait_s: float = float("inf"),
        window_s: float = 0.0,
        stats: BatchStats | None = None,
    ) -> None:
        self._commit = commit
        self._max_events = max_events
        self._max_wait_s = max_wait_s
        self._max_queue_wait_s = max_queue_wait_s
        self._window_s = window_s
        # How many events the commit window waits for: those that were waiting
        # when the last commit ended (README, Writer: the commit window).
        self._expected = 1
        # The open batch's size at which a lingering flusher wants to be woken.
        self._wake_at = 1
        self._queue_max = queue_max
        self._flushers_wanted = flushers
        self._stats = stats or BatchStats()
        self._open = Batch()
        self._pending = 0  # events accepted and not yet answered
        self._in_flight = 0  # batches being committed
        self._wakeup = asyncio.Event()
        self._closing = False
        # Why events are refused at once (the database cannot commit), or None.
        self._refusing: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pending(self) -> int:
        return self._pending

    def refuse(self, reason: str) -> None:
        """Refuse new events at once, and the open batch too: none of it was sent."""
        self._refusing = reason
        batch, self._open = self._open, Batch()
        self._resolve(batch, NotStored(reason))
        # Its clients were told to go elsewhere: the window waits for nobody
        # until a commit shows how many come back, and a flusher lingering on
        # the refused batch stops waiting for it.
        self._expected = 1
        self._wakeup.set()

    def resume(self) -> None:
        self._refusing = None

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._flush_loop(), name=f"flusher-{i}")
                       for i in range(self._flushers_wanted)]

    async def submit(self, reaction: Reaction, deadline: float = math.inf) -> None:
        """Wait until ``reaction`` is committed (by ``deadline``, epoch seconds); raise if it could not be."""
        if self._closing:
            raise ShuttingDown("writer is shutting down")
        if self._refusing is not None:
            raise NotStored(self._refusing)
        if self._pending >= self._queue_max:
            raise Overloaded("writer is overloaded")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        now = time.monotonic()
        if not self._open.reactions:
            self._open.opened_at = now
        self._open.reactions.append(reaction)
        self._open.waiters.append(waiter)
        self._open.arrived.append(now)
        self._open.deadlines.append(deadline)
        self._pending += 1
        if len(self._open.reactions) >= self._wake_at:
            self._wakeup.set()
        # Each request has its own future: if the client goes away, only that
        # future is cancelled, and the batch commits (and skips it) as usual.
        await waiter

    async def close(self) -> None:
        """Refuse new events, commit everything accepted, stop the flushers."""
        self._closing = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _flush_loop(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            await self._flush(batch)

    async def _next_batch(self) -> Batch | None:
        while not self._open.reactions:
            if self._closing:
                self._wakeup.set()  # let the other flushers see it too
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        await self._linger()
        self._drop_expired()
        return self._take() if self._open.reactions else await self._next_batch()

    async def _linger(self) -> None:
        """Wait briefly for a fuller batch: with another commit in flight, or within the commit window.

        The commit window waits, from the batch's first event, until the batch
        holds as many events as were waiting when the last commit ended (the
        clients just answered tend to come back), or until the window closes.
        A lone client is never kept waiting: it is all the last commit held.
        """
        if self._closing:
            return
        if self._in_flight:
            target, deadline = self._max_events, self._open.opened_at + self._max_wait_s
        elif self._window_s > 0:
            target, deadline = min(self._expected, self._max_events), self._open.opened_at + self._window_s
        else:
            return
        batch = self._open
        self._wake_at = target
        try:
            # Until another flusher takes the batch or refuse() answers it: then the target is stale.
            while self._open is batch and len(batch.reactions) < target and not self._closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(remaining):  # a timer, where wait_for would add a task
                        await self._wakeup.wait()
                except TimeoutError:
                    return
        finally:
            self._wake_at = 1

    def _drop_expired(self) -> None:
        """Refuse the events that waited too long, or are past their deadline (they were never sent)."""
        batch = self._open
        cutoff = bisect.bisect_left(batch.arrived, time.monotonic() - self._max_queue_wait_s)
        if cutoff:
            self._open = batch.split(cutoff)
            self._resolve(batch, NotStored("not committed in time: the database is slow; retry"))
        now = time.time()
        if self._open.deadline < now:
            late_ones = self._open.take_late(now)
            self._resolve(late_ones, late(late_ones.deadline))

    def _take(self) -> Batch:
        batch = self._open
        if len(batch.reactions) <= self._max_events:
            self._open = Batch()
            if self._flushers_wanted > 1:
                self._wakeup.set()  # another flusher lingering on this batch stops waiting for it
        else:
            self._open = batch.split(self._max_events)
            self._wakeup.set()
        return batch

    async def _flush(self, batch: Batch) -> None:
        self._in_flight += 1
        started = time.monotonic()
        try:
            await self._commit(batch.reactions, batch.deadline)
            self._expected = self._pending
        except Exception as exc:  # every failure answers the batch, never a 204
            log.error("commit of %d events failed: %s", len(batch.reactions), exc)
            outcome = as_outcome(exc)
            self._resolve(batch, outcome)  # answer first: nothing below may leave a waiter hanging
            self._stats.on_failure(len(batch.reactions), outcome)
        else:
            self._resolve(batch, None)
            self._stats.on_commit(len(batch.reactions), time.monotonic() - started)
        finally:
            self._in_flight -= 1

    def _resolve(self, batch: Batch, error: BaseException | None) -> None:
        self._pending -= len(batch.waiters)
        for waiter in batch.waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)


def as_outcome(exc: BaseException) -> CommitFailed:
    """What a failed commit means for its events: anything not known to be a rollback is unknown."""
    if isinstance(exc, CommitFailed):
        return exc
    return OutcomeUnknown(f"{type(exc).__name__}: {exc}")


class DirectCommitter:
    """One transaction per request: the naive design, kept as a benchmark baseline."""

    def __init__(self, commit: CommitFn, *, queue_max: int, stats: BatchStats | None = None) -> None:
        self._commit = commit
        self._queue_max = queue_max
        self._stats = stats or BatchStats()
        self._pending = 0
        self._closing = False
        self._refusing: str | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        return self._pending

    def refuse(self, reason: str) -> None:
        self._refusing = reason

    def resume(self) -> None:
        self._refusing = None

    def start(self) -> None:
        pass

    async def submit(self, reaction: Reaction, deadline: float = math.inf) -> None:
        if self._closing:
            raise ShuttingDown("writer is shutting down")
        if self._refusing is not None:
            raise NotStored(self._refusing)
        if self._pending >= self._queue_max:
            raise Overloaded("writer is overloaded")
        if deadline < time.time():
            raise late(deadline)
        self._pending += 1
        self._idle.clear()
        started = time.monotonic()
        try:
            await asyncio.shield(self._commit([reaction], deadline))
        except Exception as exc:
            outcome = as_outcome(exc)
            self._stats.on_failure(1, outcome)
            raise outcome from exc
        else:
            self._stats.on_commit(1, time.monotonic() - started)
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    async def close(self) -> None:
        self._closing = True
        await self._idle.wait()


Committer = GroupCommitter | DirectCommitter
