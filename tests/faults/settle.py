"""How long unknown outcomes took to settle, measured during a load (README, Invariants 8).

``SettleWatch`` polls every shard's raw log for the events of the load that
got an ambiguous answer (504 unknown, or none) and notes when the number of
rows of each changed. A change after an ambiguous answer that no later
attempt of the same event explains (no retry had been sent yet) is that
attempt arriving late: its distance from the answer is how long the unknown
took to settle. ``SettleReport`` keeps the longest, per phase. Its
resolution is one poll (POLL_S): a row that came within a poll of its
ambiguous answer counts as stored by then.
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
class SettleWatch:
    record: AuditRecord
    dsns: list[str]
    changes: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # key: (seen at, rows)

    def watched(self) -> list[Sent]:
        return [s for s in self.record.events if s.ambiguous_at]

    async def poll(self) -> None:
        events = self.watched()
        if not events:
            return
        rows: dict[str, int] = {}
        users, keys = [s.user for s in events], [s.key for s in events]
        for dsn in self.dsns:
            with contextlib.suppress(OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = await asyncio.wait_for(asyncpg.connect(dsn), QUERY_TIMEOUT_S)
                try:
                    for row in await conn.fetch(ROWS, users, keys, timeout=QUERY_TIMEOUT_S):
                        rows[row["id"]] = rows.get(row["id"], 0) + row["rows"]
                finally:
                    conn.terminate()
        now = time.monotonic()
        for sent in events:
            count = rows.get(f"{sent.user} {sent.key}", 0)
            seen = self.changes.get(sent.key)
            if seen is None:  # first seen: what was stored by its first ambiguous answer (to one poll)
                self.changes[sent.key] = [(sent.ambiguous_at[0], count)]
            elif seen[-1][1] != count:
                seen.append((now, count))

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
                retries = [t for t in sent.attempted_at if t > answered]
                for seen_at, _ in self.changes.get(sent.key, [])[1:]:
                    if seen_at > answered and not any(t < seen_at for t in retries):
                        out.late_changes += 1
                        if seen_at - answered > out.settled_s:
                            out.settled_s, out.worst = seen_at - answered, f"{sent.key} ({sent.user})"
        return out


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
