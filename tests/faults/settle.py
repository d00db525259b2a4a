"""How long unknown outcomes took to settle, measured during a load (docs/design.md, Invariants 8).

``SettleWatch`` polls every shard's raw log for the events of the load that
got an ambiguous answer (504 unknown, or none) and notes when the number of
rows of each changed, between the start of the last poll that saw them as
before and the end of the one that saw them changed. A change after an
ambiguous answer that no later attempt of the same event explains (no retry
had been sent yet, or the event was acknowledged while the rows were still
as before) is that attempt arriving late: its distance from the answer is
how long the unknown took to settle. ``SettleReport`` keeps the longest, per phase. Its
resolution is one poll (POLL_S): a row that came within a poll of its
ambiguous answer counts as stored by then. A shard that does not answer (down,
cut off, frozen) is not seen meanwhile: what it holds when it answers again
is taken as what it held at the answer, so its late commits, if any, are not
measured here (the late-delivery tests force them instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

from common.settings import SETTLE_BOUND_S
from tests.faults.record import AuditRecord, Sent

# How often the shards are asked: the settle times are measured to this.
POLL_S = 0.2
# After the load, the last ambiguous answer is watched this long past the settle bound.
WATCH_AFTER_S = SETTLE_BOUND_S + 1.0
# One poll's statement per shard, bounded.
QUERY_TIMEOUT_S = 2.0

ROWS = """
SELECT username || ' ' || idem_key AS id, count(*) AS rows FROM reactions
WHERE (username, idem_key) IN (SELECT * FROM unnest($1::text[], $2::text[])) GROUP BY 1
"""


@dataclass
class SettleReport:
    unknown_answers: int = 0  # ambiguous answers watched
    late_changes: int = 0  # counts that changed after an ambiguous answer, with no retry sent since
    settled_s: float = 0.0  # the longest time from an ambiguous answer to such a change (0: none)
    worst: str = ""

    def line(self) -> str:
        if not self.unknown_answers:
            return "no unknown answers"
        return (f"{self.unknown_answers} unknown answers; settled within {self.settled_s:.1f}s"
                f" (bound {SETTLE_BOUND_S:g}s; {self.late_changes} stored after their unknown answer"
                f"{': ' + self.worst if self.worst else ''})")


@dataclass
class Change:
    """A shard's rows of one event changed: still as before at ``absent_at``, changed by ``seen_at``."""

    absent_at: float
    seen_at: float


@dataclass
class SettleWatch:
    record: AuditRecord
    dsns: list[str]
    # Per event key and shard: the start of the last poll that saw its rows, and how many.
    last: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    changes: dict[str, list[Change]] = field(default_factory=dict)

    def watched(self) -> list[Sent]:
        return [s for s in self.record.events if s.ambiguous_at]

    async def poll(self) -> None:
        """One look at every shard; a shard that does not answer keeps what was last seen of it."""
        events = self.watched()
        if not events:
            return
        for dsn in self.dsns:
            started = time.monotonic()
            with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                self.note(dsn, events, await shard_rows(dsn, events), started, time.monotonic())

    def note(self, dsn: str, events: list[Sent], rows: dict[str, int], started: float, ended: float) -> None:
        """A poll's rows: it read a snapshot taken between ``started`` and ``ended``."""
        for sent in events:
            count = rows.get(f"{sent.user} {sent.key}", 0)
            last = self.last.get((sent.key, dsn))
            if last is not None and last[1] != count:
                self.changes.setdefault(sent.key, []).append(Change(absent_at=last[0], seen_at=ended))
            # First seen: what the shard held at the first ambiguous answer (to one poll).
            self.last[(sent.key, dsn)] = (started if last is not None else sent.ambiguous_at[0], count)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)

    async def finish(self) -> SettleReport:
        """Watch the last ambiguous answer past the settle bound, then report."""
        last = max((t for s in self.watched() for t in s.ambiguous_at), default=0.0)
        while time.monotonic() < last + WATCH_AFTER_S:
            await self.poll()
            await asyncio.sleep(POLL_S)
        await self.poll()
        return self.report()

    def report(self) -> SettleReport:
        out = SettleReport()
        for sent in self.watched():
            out.unknown_answers += len(sent.ambiguous_at)
            for answered in sent.ambiguous_at:
                for change in self.changes.get(sent.key, []):
                    if change.absent_at > answered and not explained(sent, answered, change):
                        out.late_changes += 1
                        if change.seen_at - answered > out.settled_s:
                            out.settled_s, out.worst = change.seen_at - answered, f"{sent.key} ({sent.user})"
        return out


async def shard_rows(dsn: str, events: list[Sent]) -> dict[str, int]:
    """Rows per "user key" of ``events`` in one shard's raw log."""
    conn = await asyncio.wait_for(asyncpg.connect(dsn), QUERY_TIMEOUT_S)
    try:
        found = await conn.fetch(ROWS, [s.user for s in events], [s.key for s in events], timeout=QUERY_TIMEOUT_S)
    finally:
        conn.terminate()
    return {row["id"]: row["rows"] for row in found}


def explained(sent: Sent, answered: float, change: Change) -> bool:
    """Whether a retry after ``answered`` may have made ``change``: one had left by the time the change was
    seen, and the event was not acknowledged while the rows were still as before (an acknowledged retry's row
    is there by its 204)."""
    acked_before = sent.acked_at is not None and sent.acked_at < change.absent_at
    return not acked_before and any(answered < t < change.seen_at for t in sent.attempted_at)


@contextlib.asynccontextmanager
async def watching(record: AuditRecord, dsns: list[str]) -> AsyncIterator[SettleWatch]:
    """A SettleWatch polling in the background while the block runs."""
    watch, stop = SettleWatch(record, dsns), asyncio.Event()
    task = asyncio.create_task(watch.run(stop), name="settle watch")
    try:
        yield watch
    finally:
        stop.set()
        await task
