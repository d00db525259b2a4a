"""Where imported rows come from: a CSV file of ``timestamp,user,event``, or a table in the seed's format.

Each row carries its place in the source (``block_id``: the record's index for
a file, the ``id`` column for a table), from which the batches and their
idempotency keys are made: the same source read again gives the same rows
with the same places, so a rerun sends the same keys with the same bodies.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import AsyncGenerator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg

# The header record a file may start with (as the batch endpoint accepts it).
HEADER = ["timestamp", "user", "event"]
# Rows read at a time (one round trip of the server-side cursor): few round trips, bounded memory,
# and the per-row work done in plain loops.
CHUNK_ROWS = 5_000
DEFAULT_TABLE = "user_reaction"


class SourceError(Exception):
    """The source cannot be read (not a row that is bad: those are rejected one by one)."""


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One row as read, not yet validated. ``ts`` is text (a file) or milliseconds (a table); None is missing."""

    block_id: int
    label: str
    ts: str | int | None
    user: str | None
    event: str | None


@dataclass(frozen=True, slots=True)
class Chunk:
    """Rows read at once, in source order, column by column: the batches are cut from the columns, and a
    ``SourceRow`` is made only for a row that is reported (a reject, a refused batch's row)."""

    places: Sequence[int]
    ts: Sequence[str | int | None]
    users: Sequence[str | None]
    events: Sequence[str | None]
    # A row's label is "{prefix} {place + offset}", unless the chunk was made of rows with labels of their own.
    prefix: str = "id"
    offset: int = 0
    labels: Sequence[str] | None = None

    @classmethod
    def of_rows(cls, rows: Iterable[SourceRow]) -> Chunk:
        rows = list(rows)
        return cls([r.block_id for r in rows], [r.ts for r in rows], [r.user for r in rows],
                   [r.event for r in rows], labels=[r.label for r in rows])

    def __len__(self) -> int:
        return len(self.places)

    def __iter__(self) -> Iterator[SourceRow]:
        return (self.row(i) for i in range(len(self.places)))

    def label(self, i: int) -> str:
        return self.labels[i] if self.labels is not None else f"{self.prefix} {self.places[i] + self.offset}"

    def row(self, i: int) -> SourceRow:
        return SourceRow(self.places[i], self.label(i), self.ts[i], self.users[i], self.events[i])


class Source(Protocol):
    """A readable source: its rows, their count (for the progress bar), and the identity its keys derive from."""

    @property
    def description(self) -> str: ...

    @property
    def identity(self) -> str: ...

    def chunks(self) -> AsyncGenerator[Chunk, None]:
        """The rows in source order, CHUNK_ROWS at a time."""
        ...

    async def count(self) -> int: ...


def digest(text: str) -> str:
    """A short, stable name for a source's identity, used in every key of its batches."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def file_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(index from 0, fields) of each record after the optional header; UTF-8 with or without BOM, LF or CRLF.

    Undecodable bytes become lone surrogates, which the username check refuses,
    so a row with bad bytes is rejected instead of stopping the import.
    """
    try:
        handle = path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        # strict: a quote in the wrong place is an error, not a silently different field.
        reader = csv.reader(handle, strict=True)
        index = 0
        try:
            for fields in reader:
                if index == 0 and reader.line_num == 1 and fields == HEADER:
                    continue
                yield index, fields
                index += 1
        except csv.Error as exc:
            raise SourceError(f"{path}: not CSV at line {reader.line_num}: {exc}") from None


# A record that is not three fields: read as a row with every field missing (refused, with the reason).
NOT_THREE_FIELDS = (None, None, None)


def file_chunk(first: int, records: list[list[str]]) -> Chunk:
    """Records ``first``, ``first + 1``, ... (from 0); labelled from 1, the header not counted, as the batch
    endpoint numbers them."""
    columns = zip(*(fields if len(fields) == len(HEADER) else NOT_THREE_FIELDS for fields in records), strict=True)
    ts, users, events = (list(column) for column in columns)
    return Chunk(range(first, first + len(records)), ts, users, events, prefix="record", offset=1)


@dataclass(frozen=True)
class CsvSource:
    description: str
    identity: str
    path: Path

    @classmethod
    def open(cls, path: Path) -> CsvSource:
        if not path.is_file():
            raise SourceError(f"{path}: no such file")
        resolved = path.resolve()
        return cls(description=str(path), identity=digest(f"file:{resolved}"), path=resolved)

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        records: list[list[str]] = []
        first = 0
        for index, fields in file_records(self.path):
            if not records:
                first = index
            records.append(fields)
            if len(records) == CHUNK_ROWS:
                yield file_chunk(first, records)
                records = []
        if records:
            yield file_chunk(first, records)

    async def count(self) -> int:
        return sum(1 for _ in file_records(self.path))


def quote_table(table: str) -> str:
    """``name`` or ``schema.name``, each part quoted as an identifier (so case and odd characters are kept)."""
    parts = table.split(".")
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise SourceError(f"--table must be NAME or SCHEMA.NAME, got {table!r}")
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def table_query(table: str) -> str:
    """The seed's rows in id order; a timestamp without time zone is read as UTC (extract(epoch) does exactly that),
    and an infinite one comes back as NULL (refused as missing)."""
    return (
        'SELECT id, username, reaction, CASE WHEN isfinite("timestamp") '
        'THEN (extract(epoch FROM "timestamp") * 1000)::bigint END AS ts '
        f"FROM {quote_table(table)} ORDER BY id"
    )


async def connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError, ValueError) as exc:
        raise SourceError(f"cannot connect to the source database: {exc}") from None


async def database_identity(dsn: str, table: str) -> str:
    """The database (its server's system identifier where this role may read it, and its name) and the table:
    the same table gives the same keys however its DSN is spelled."""
    conn = await connect(dsn)
    try:
        try:
            system = await conn.fetchval("SELECT system_identifier FROM pg_control_system()")
        except asyncpg.InsufficientPrivilegeError:
            system = "?"
        name = await conn.fetchval("SELECT current_database()")
    finally:
        await conn.close()
    return digest(f"table:{system}/{name}/{table}")


@dataclass(frozen=True)
class TableSource:
    description: str
    identity: str
    dsn: str
    table: str

    @classmethod
    async def open(cls, dsn: str, table: str = DEFAULT_TABLE) -> TableSource:
        quote_table(table)
        return cls(description=f"table {table}", identity=await database_identity(dsn, table), dsn=dsn, table=table)

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        """Streamed with a server-side cursor in one read-only transaction: never the whole table in memory."""
        conn = await connect(self.dsn)
        try:
            async with conn.transaction(readonly=True):
                cursor = await conn.cursor(table_query(self.table))
                while records := await cursor.fetch(CHUNK_ROWS):
                    ids, users, events, ts = zip(*records, strict=True)  # by column, in C
                    yield Chunk(ids, ts, users, events)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # The source went away mid-read too: the import stops and says so; a rerun is exact.
            raise SourceError(f"reading {self.table}: {exc}") from None
        finally:
            await conn.close()

    async def count(self) -> int:
        conn = await connect(self.dsn)
        try:
            count = await conn.fetchval(f"SELECT count(*) FROM {quote_table(self.table)}")
        except asyncpg.PostgresError as exc:
            raise SourceError(f"reading {self.table}: {exc}") from None
        finally:
            await conn.close()
        return int(count)
