"""Reading the sources: CSV files as the batch endpoint reads bodies, and the seed's table, in id order, as UTC."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from sharding.importer.source import CsvSource, SourceError, SourceRow, TableSource
from sharding.local.postgres import LocalPostgres

SOURCE_DATABASE = "import_source"


async def read(source: CsvSource | TableSource) -> list[SourceRow]:
    async with contextlib.aclosing(source.chunks()) as chunks:
        return [row async for chunk in chunks for row in chunk]


async def test_a_file_with_bom_header_crlf_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(b'\xef\xbb\xbftimestamp,user,event\r\n1,"a,b",click\r\n2,"say ""hi""",impression\r\n'
                     b'3,bad\xff,click\r\nonly,two\r\n')
    source = CsvSource.open(path)
    got = await read(source)
    assert [(r.block_id, r.label, r.ts, r.user, r.event) for r in got[:2]] == [
        (0, "record 1", "1", "a,b", "click"), (1, "record 2", "2", 'say "hi"', "impression")]
    assert got[2].user == "bad\udcff"  # refused later by the username check, not a crash
    assert (got[3].label, got[3].ts) == ("record 4", None)
    assert await source.count() == 4
    assert source.identity == CsvSource.open(tmp_path / "." / "events.csv").identity


async def test_a_header_only_counts_as_the_first_record(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("1,alice,click\ntimestamp,user,event\n")
    assert [r.label for r in await read(CsvSource.open(path))] == ["record 1", "record 2"]


async def test_a_file_that_is_not_csv_stops_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text('1,alice,click\n2,"bob"x,click\n')
    with pytest.raises(SourceError, match="line 2"):
        await read(CsvSource.open(path))
    with pytest.raises(SourceError, match="no such file"):
        CsvSource.open(tmp_path / "missing.csv")


@pytest.fixture
async def source_dsn(postgres: LocalPostgres) -> AsyncIterator[str]:
    """A database of the seed's system, in a time zone far from UTC (which must not matter)."""
    postgres.create_database(SOURCE_DATABASE)
    dsn = postgres.dsn_for(SOURCE_DATABASE)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS user_reaction, \"Odd Name\"")
        await conn.execute(f"ALTER DATABASE {SOURCE_DATABASE} SET timezone = 'Asia/Tokyo'")
        await conn.execute("CREATE TABLE user_reaction (id SERIAL, username VARCHAR(20), reaction VARCHAR(10), "
                           "timestamp timestamp(3) without time zone)")
        yield dsn
        await conn.execute("DROP TABLE IF EXISTS user_reaction, \"Odd Name\"")
    finally:
        await conn.close()


async def test_the_table_in_id_order_with_timestamps_as_utc(source_dsn: str) -> None:
    conn = await asyncpg.connect(source_dsn)
    try:
        await conn.execute("INSERT INTO user_reaction (id, username, reaction, timestamp) VALUES "
                           "(7, 'carol', 'impression', '2026-03-29 01:30:00.123'), "
                           "(2, 'alice', 'click', '2025-12-31 23:59:59.999'), "
                           "(5, NULL, 'click', 'infinity'), (9, 'dave', 'click', NULL)")
    finally:
        await conn.close()
    source = await TableSource.open(source_dsn)
    got = await read(source)
    assert [(r.block_id, r.label, r.user, r.event) for r in got] == [
        (2, "id 2", "alice", "click"), (5, "id 5", None, "click"), (7, "id 7", "carol", "impression"),
        (9, "id 9", "dave", "click")]
    expected = [datetime(2025, 12, 31, 23, 59, 59, 999000, UTC), datetime(2026, 3, 29, 1, 30, 0, 123000, UTC)]
    assert [got[0].ts, got[2].ts] == [int(t.timestamp() * 1000) for t in expected]
    assert got[1].ts is None and got[3].ts is None
    assert await source.count() == 4
    assert (await TableSource.open(source_dsn + "?application_name=other")).identity == source.identity
    assert (await TableSource.open(source_dsn, "public.user_reaction")).identity != source.identity


async def test_a_quoted_table_name_and_a_missing_table(source_dsn: str) -> None:
    conn = await asyncpg.connect(source_dsn)
    try:
        await conn.execute('CREATE TABLE "Odd Name" (id SERIAL, username VARCHAR(20), reaction VARCHAR(10), '
                           "timestamp timestamp(3) without time zone)")
        await conn.execute('INSERT INTO "Odd Name" (username, reaction, timestamp) VALUES (\'x\', \'click\', now())')
    finally:
        await conn.close()
    assert len(await read(await TableSource.open(source_dsn, "Odd Name"))) == 1
    with pytest.raises(SourceError, match="nowhere"):
        await read(await TableSource.open(source_dsn, "nowhere"))
    with pytest.raises(SourceError, match=r"NAME or SCHEMA\.NAME"):
        await TableSource.open(source_dsn, "a.b.c")
