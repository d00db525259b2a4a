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

from collections.abc import Iterable
from dataclasses import dataclass, field

from common.events import BadInput, build_reaction
from sharding.importer.source import SourceRow

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
    rows: tuple[SourceRow, ...] = field(repr=False)


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


def csv_field(value: str) -> str:
    """RFC 4180: quoted only when it must be (a valid username holds no line break)."""
    if "," in value or '"' in value:
        return '"' + value.replace('"', '""') + '"'
    return value


class BatchMaker:
    """Fed rows in source order (any number at a time), it gives back finished batches and rejects."""

    def __init__(self, identity: str, batch_events: int, batch_bytes: int, now: int) -> None:
        self.identity = identity
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.now = now
        self.block: int | None = None
        self.piece = 0
        self.records: list[bytes] = []
        self.rows: list[SourceRow] = []
        self.size = 0

    def feed(self, rows: Iterable[SourceRow]) -> list[Batch | Reject]:
        """The batches these rows finished and the rows rejected, in source order."""
        out: list[Batch | Reject] = []
        for row in rows:
            block = row.block_id // self.batch_events
            if block != self.block:
                out.extend(self.finish())
                self.block, self.piece = block, 0
            record = check(row, self.now)
            if isinstance(record, Reject):
                out.append(record)
                continue
            if self.records and self.size + len(record) > self.batch_bytes:
                out.append(self.cut())
                self.piece += 1
            self.records.append(record)
            self.rows.append(row)
            self.size += len(record)
        return out

    def finish(self) -> list[Batch]:
        """The last batch of the current block, if it has any event; call once more after the last row."""
        return [self.cut()] if self.records else []

    def cut(self) -> Batch:
        key = f"{KEY_PREFIX}-{self.identity}-{self.block}" + (f".{self.piece}" if self.piece else "")
        batch = Batch(key, b"".join(self.records), len(self.records), self.rows[0].label, self.rows[-1].label,
                      tuple(self.rows))
        self.records, self.rows, self.size = [], [], 0
        return batch
