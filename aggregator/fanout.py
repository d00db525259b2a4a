"""Fan-out: one read per shard, concurrently, each bounded by the shard timeout.

Policy: a shard that raises or times out becomes a ``ShardFailure``; it never
cancels the other reads. The timeout covers everything the read waits on:
getting a connection, the statement, giving the connection back. A read that
timed out terminates its connection instead of waiting for the server to
acknowledge a cancel (common/pg.py). Results are keyed by shard name, so
merging does not depend on the order of arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
from prometheus_client import Histogram

from aggregator import db
from aggregator.merge import HourAnswer, merge, merge_hours, same_database
from aggregator.metrics import AggregatorMetrics
from aggregator.shards import ShardHandle
from common.pg import WaitBounds, bounded_connection

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


class ColdReadsBusy(Exception):
    """Every cold-read slot stayed taken for the whole wait: answer 503, retry later."""


@dataclass
class ShardStatus:
    """The last outcome of a read of one shard, for /shards and /readyz."""

    identity: db.ShardIdentity | None = None
    ok_at: float | None = None  # time.monotonic() of the last read that answered
    failed_at: float | None = None
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.ok_at is not None and (self.failed_at is None or self.ok_at > self.failed_at)


def identity_of(result: object) -> db.ShardIdentity | None:
    """The database a read's result came from (every read returns it: aggregator/db.py)."""
    if isinstance(result, db.ShardIdentity):
        return result
    identity = getattr(result, "identity", None)
    return identity if isinstance(identity, db.ShardIdentity) else None


class FanOut:
    def __init__(self, timeout_s: float, metrics: AggregatorMetrics, cold_read_slots: int,
                 slot_wait_s: float) -> None:
        self.timeout_s = timeout_s
        self._bounds = WaitBounds(acquire_s=timeout_s, statement_s=timeout_s)
        self._metrics = metrics
        # Cold reads share each shard's pool with the refresher; bounding them
        # keeps connections free so that the live hours and the version check
        # are refreshed however many cold reads are waiting.
        self._cold_reads = asyncio.Semaphore(cold_read_slots)
        self._slot_wait_s = slot_wait_s
        self.status: dict[str, ShardStatus] = {}

    async def gather(self, shards: Iterable[ShardHandle], fetch: Fetch[T]) -> tuple[dict[str, T], list[ShardFailure]]:
        """Run ``fetch`` on every shard; split answers from failures.

        Two shards that answer from one database both fail: it would be summed twice.
        """
        handles = list(shards)
        outcomes = await asyncio.gather(*(self._one(h, fetch) for h in handles))
        answers: dict[str, T] = {}
        failures: list[ShardFailure] = []
        for handle, outcome in zip(handles, outcomes, strict=True):
            if isinstance(outcome, ShardFailure):
                failures.append(outcome)
            else:
                answers[handle.name] = outcome
        # Shards that did not answer now are compared by the database they last answered from.
        identities: dict[str, db.ShardIdentity] = {}
        for name in [f.shard for f in failures] + list(answers):
            known = identity_of(answers[name]) if name in answers else None
            status = self.status.get(name)
            identity = known or (status.identity if status is not None else None)
            if identity is not None:
                identities[name] = identity
        for name, reason in same_database(identities).items():
            if name in answers:
                del answers[name]
                failures.append(self._failed(name, reason))
        return answers, failures

    async def _one(self, handle: ShardHandle, fetch: Fetch[T]) -> T | ShardFailure:
        try:
            async with asyncio.timeout(self.timeout_s), bounded_connection(handle.pool, self._bounds) as conn:
                result = await fetch(handle.name, conn)
        except TimeoutError:
            return self._failed(handle.name, f"no answer within {self.timeout_s:g} s")
        except asyncpg.QueryCanceledError:  # the server's own statement_timeout: it answers, but too slowly
            return self._failed(handle.name, f"too slow: the statement ran past {self._bounds.server_statement_ms} ms")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return self._failed(handle.name, f"unreachable ({type(exc).__name__})")
        except Exception as exc:  # any other failure is still this shard's, never a 500
            return self._failed(handle.name, f"failed ({type(exc).__name__}: {exc})")
        self._answered(handle.name, identity_of(result))
        return result

    def _answered(self, name: str, identity: db.ShardIdentity | None) -> None:
        status = self.status.setdefault(name, ShardStatus())
        status.ok_at = time.monotonic()
        if identity is not None:
            if status.identity is not None and identity != status.identity:
                log.warning("shard %s: a different database answers behind the same DSN (%s, was %s)",
                            name, identity, status.identity)
            status.identity = identity

    def _failed(self, name: str, reason: str) -> ShardFailure:
        self._metrics.shard_errors.labels(name).inc()
        status = self.status.setdefault(name, ShardStatus())
        status.failed_at, status.error = time.monotonic(), reason
        log.warning("shard %s: %s", name, reason)
        return ShardFailure(name, reason)

    def forget(self, names: Iterable[str]) -> None:
        for name in names:
            self.status.pop(name, None)

    @contextlib.asynccontextmanager
    async def cold_slot(self) -> AsyncIterator[None]:
        """One cold-read slot, waited for at most ``slot_wait_s`` (else ColdReadsBusy)."""
        try:
            async with asyncio.timeout(self._slot_wait_s):
                await self._cold_reads.acquire()
        except TimeoutError:
            raise ColdReadsBusy(f"every cold-read slot stayed busy for {self._slot_wait_s:g} s") from None
        try:
            yield
        finally:
            self._cold_reads.release()

    async def read_hour(self, shards: Iterable[ShardHandle], hour: int) -> HourAnswer:
        """A cold read of a whole hour from every shard; IncompleteAnswer if any fails.

        Waits at most ``slot_wait_s`` for a cold-read slot (ColdReadsBusy), then
        at most the shard timeout for the shards.
        """
        answers, started = await self._cold_read(shards, lambda _name, conn: db.fetch_hour(conn, hour),
                                                 self._metrics.fanout_seconds)
        return merge(answers, started)

    async def read_hours(self, shards: Iterable[ShardHandle], hours: Sequence[int]) -> dict[int, HourAnswer]:
        """A cold read of many whole hours: one statement per shard for all of them, one slot.

        Bounded like ``read_hour``; all or nothing: IncompleteAnswer if any shard fails.
        """
        answers, started = await self._cold_read(shards, lambda _name, conn: db.fetch_hours(conn, hours),
                                                 self._metrics.series_fanout_seconds)
        return merge_hours(answers, hours, started)

    async def _cold_read(self, shards: Iterable[ShardHandle], fetch: Fetch[T],
                         timing: Histogram) -> tuple[dict[str, T], float]:
        """Every shard's answer (in one cold-read slot) and when the read started; IncompleteAnswer if any fails."""
        async with self.cold_slot():
            started = time.monotonic()
            answers, failures = await self.gather(shards, fetch)
            timing.observe(time.monotonic() - started)
        if failures:
            raise IncompleteAnswer(failures)
        return answers, started
