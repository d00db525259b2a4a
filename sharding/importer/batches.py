"""Rows to keyed batches, deterministically, and bad rows to rejects.

A row is checked by the same function as a single POST (``build_reaction``),
so a row that would be a 400 is rejected here, with the same reason, and the
import goes on. Good rows are cut into batches by their place in the source:
block ``n`` holds the rows whose ``block_id // batch_events`` is ``n``, and a
block whose body would pass ``batch_bytes`` is cut into pieces in order. The
key is the source's identity, the block and the piece: reading the same
source again with the same sizes gives the same keys with the same bodies,
which is what makes a rerun exact. A rerun with other sizes reuses block 0's
key with another body: the endpoint answers 422, loudly, instead of counting
twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from common.batches import csv_field
from common.events import (
    EVENT_NAMES,
    MAX_FUTURE_SKEW_MS,
    MAX_TIMESTAMP_DIGITS,
    MAX_USERNAME_CHARS,
    MIN_WRITE_TIMESTAMP_MS,
    BadInput,
    build_reaction,
)
from sharding.importer.source import Chunk, SourceRow

# Every key starts so, to tell an import's keys from a client's in the shards' records.
KEY_PREFIX = "import"


@dataclass(frozen=True, slots=True)
class Reject:
    """A row that is not imported, and why (the reason a single POST of it would get)."""

    label: str
    ts: str
    user: str
    event: str
    reason: str


@dataclass(frozen=True)
class Batch:
    """One request: its key, its CSV body, how many events it holds, and the rows' first and last place."""

    key: str
    body: bytes
    events: int
    first: str
    last: str
    rows: Iterable[SourceRow] = field(repr=False, compare=False)


class KeptRows:
    """A batch's rows, made only when iterated (a refused batch's rows go to the rejects file)."""

    def __init__(self, spans: list[tuple[Chunk, list[int]]]) -> None:
        self.spans = spans

    def __iter__(self) -> Iterator[SourceRow]:
        return (chunk.row(i) for chunk, kept in self.spans for i in kept)


def text(value: str | int | None) -> str:
    return "" if value is None else str(value)


def check(row: SourceRow, now: int) -> bytes | Reject:
    """The row's CSV record for the body, or why it is refused."""
    if row.ts is None or row.user is None or row.event is None:
        reason = "expected 3 fields: timestamp,user,event" if row.ts is None and row.user is None \
            else "timestamp, user and event are required"
        return Reject(row.label, text(row.ts), text(row.user), text(row.event), reason)
    try:
        reaction = build_reaction(str(row.ts), row.user, row.event, None, now)
    except BadInput as exc:
        return Reject(row.label, text(row.ts), row.user, row.event, (exc.text or "").strip())
    return f"{reaction.ts},{csv_field(reaction.username)},{row.event}\n".encode()


class BatchMaker:
    """Fed rows in source order (any number at a time), it gives back finished batches and rejects.

    Most rows take a fast path of a few string tests that accepts only what
    ``check`` accepts (an ASCII username of printable characters and no comma or
    quote, a known event, a timestamp of digits in the accepted range) and
    writes the same record; every other row goes through ``check``.
    """

    def __init__(self, identity: str, batch_events: int, batch_bytes: int, now: int) -> None:
        self.identity = identity
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.now = now
        self.block: int | None = None
        self.piece = 0
        self.records: list[str] = []
        self.spans: list[tuple[Chunk, list[int]]] = []
        self.size = 0

    def feed(self, rows: Chunk | Iterable[SourceRow]) -> list[Batch | Reject]:
        """The batches these rows finished and the rows rejected, in source order."""
        chunk = rows if isinstance(rows, Chunk) else Chunk.of_rows(rows)
        out: list[Batch | Reject] = []
        per_block, limit, events = self.batch_events, self.batch_bytes, EVENT_NAMES
        first, last = MIN_WRITE_TIMESTAMP_MS, self.now + MAX_FUTURE_SKEW_MS
        records, kept = self.records, self.keep(chunk)
        for i, (place, ts, user, event) in enumerate(zip(chunk.places, chunk.ts, chunk.users, chunk.events,
                                                         strict=True)):
            block = place // per_block
            if block != self.block:
                out.extend(self.finish())
                self.block, self.piece = block, 0
                records, kept = self.records, self.keep(chunk)
            if type(ts) is str:
                ms = int(ts) if len(ts) <= MAX_TIMESTAMP_DIGITS and ts.isdigit() and ts.isascii() else -1
            else:
                ms = ts if type(ts) is int else -1
            if event in events and first <= ms <= last and user and len(user) <= MAX_USERNAME_CHARS \
                    and user.isascii() and user.isprintable() and "," not in user and '"' not in user:
                record = f"{ms},{user},{event}\n"
                size = len(record)
            else:
                checked = check(chunk.row(i), self.now)
                if isinstance(checked, Reject):
                    out.append(checked)
                    continue
                record, size = checked.decode(), len(checked)
            if records and self.size + size > limit:
                out.append(self.cut())
                self.piece += 1
                records, kept = self.records, self.keep(chunk)
            records.append(record)
            kept.append(i)
            self.size += size
        return out

    def keep(self, chunk: Chunk) -> list[int]:
        """The list of the current batch's rows (their indexes) in ``chunk``."""
        if not self.spans or self.spans[-1][0] is not chunk:
            self.spans.append((chunk, []))
        return self.spans[-1][1]

    def finish(self) -> list[Batch]:
        """The last batch of the current block, if it has any event; call once more after the last row."""
        return [self.cut()] if self.records else []

    def cut(self) -> Batch:
        key = f"{KEY_PREFIX}-{self.identity}-{self.block}" + (f".{self.piece}" if self.piece else "")
        spans = [(chunk, kept) for chunk, kept in self.spans if kept]
        first, last = spans[0][0].label(spans[0][1][0]), spans[-1][0].label(spans[-1][1][-1])
        batch = Batch(key, "".join(self.records).encode(), len(self.records), first, last, KeptRows(spans))
        self.records, self.spans, self.size = [], [], 0
        return batch
