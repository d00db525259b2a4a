"""The seed's ``user_reaction`` table made in a test, what SQL says of its hours, and ``python -m sharding import`` run
as a user runs it (another process), for the end-to-end import tests and the import benchmark."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from common.hours import MS_PER_HOUR
from sharding.importer.source import DEFAULT_TABLE
from tests.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
HourCounts = dict[int, tuple[int, int, int]]
"""hour → (unique users, clicks, impressions); hours with no event are left out."""

SEED_TABLE = ("CREATE TABLE {table} (id SERIAL, username VARCHAR(20), reaction VARCHAR(10), "
              "timestamp timestamp(3) without time zone)")
# Rows spread evenly over [now - end_days - span_days, now - end_days): users u0..u{users-1}, a click
# every third row, and every 997th user named with a comma and a quote (RFC 4180 quoting on the way).
FILL = """
INSERT INTO {table} (username, reaction, timestamp)
SELECT CASE WHEN i % 997 = 0 THEN 'q,"' || (i % $2) ELSE 'u' || (i % $2) END,
       CASE WHEN i % 3 = 0 THEN 'click' ELSE 'impression' END,
       (now() AT TIME ZONE 'UTC') - ($3::float8 + $4::float8) * interval '1 day'
           + (i::float8 / $1) * $4::float8 * interval '1 day'
FROM generate_series(0, $1 - 1) AS i
"""
# What SQL on the source says of every hour: the import must give exactly this (timestamps read as UTC;
# the rows a single POST would refuse are not counted).
HOURS_SQL = """
SELECT floor(extract(epoch FROM timestamp) * 1000 / 3600000)::bigint AS hour,
       count(DISTINCT username)::int, count(*) FILTER (WHERE reaction = 'click')::int,
       count(*) FILTER (WHERE reaction = 'impression')::int
FROM {table}
WHERE reaction IN ('click', 'impression') AND username <> '' AND timestamp IS NOT NULL
GROUP BY 1
"""
# An import may be slowed by a frozen shard, the loaded machine; it must still end well within this.
IMPORT_DEADLINE_S = 90.0


async def make_table(dsn: str, rows: int, users: int, span_days: float, end_days: float = 0.0,
                     table: str = DEFAULT_TABLE) -> None:
    """A fresh table of the seed's format with ``rows`` rows; the database's time zone is not UTC (the import
    must not care). Each test imports a table of its own name: the name is part of the import's keys."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute(f"ALTER DATABASE \"{database}\" SET timezone = 'America/New_York'")
        await conn.execute(SEED_TABLE.format(table=table))
        await conn.execute(FILL.format(table=table), rows, users, end_days, span_days)
    finally:
        await conn.close()


async def add_bad_rows(dsn: str, reactions: Sequence[tuple[str, str]], table: str = DEFAULT_TABLE) -> None:
    """Rows a single POST refuses (username, reaction): they go to the rejects file, the rest is imported."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(f"INSERT INTO {table} (username, reaction, timestamp) "
                               "VALUES ($1, $2, now() AT TIME ZONE 'UTC' - interval '1 day')", reactions)
    finally:
        await conn.close()


async def source_hours(dsn: str, table: str = DEFAULT_TABLE) -> HourCounts:
    conn = await asyncpg.connect(dsn)
    try:
        return {r[0]: (r[1], r[2], r[3]) for r in await conn.fetch(HOURS_SQL.format(table=table))}
    finally:
        await conn.close()


async def series(session: aiohttp.ClientSession, base: str, first: int, last: int) -> HourCounts | None:
    """Reactions' answer for the hours first..last (at most 744), or None while one is incomplete."""
    url = f"{base}/analytics/series?from={first * MS_PER_HOUR}&to={last * MS_PER_HOUR}"
    async with session.get(url) as resp:
        if resp.status != 200:
            return None
        lines = (await resp.text()).splitlines()[1:]
    found: HourCounts = {}
    for line in lines:
        start, unique, clicks, impressions = map(int, line.split(","))
        if (unique, clicks, impressions) != (0, 0, 0):
            found[start // MS_PER_HOUR] = (unique, clicks, impressions)
    return found


async def wait_hours_equal(base: str, expected: HourCounts, deadline_s: float) -> None:
    """Poll the series until every hour of the source's range equals SQL; fail with the differences."""
    first, last = min(expected), max(expected)
    seen: HourCounts | None = None
    deadline = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            seen = await series(session, base, first, last)
            if seen == expected:
                return
            await asyncio.sleep(0.2)
    wrong = {h: (seen.get(h), expected.get(h)) for h in set(seen or {}) | set(expected)
             if (seen or {}).get(h) != expected.get(h)} if seen is not None else "no complete series"
    raise AssertionError(f"hours differ from SQL on the source (Reactions, SQL): {wrong}")


@dataclass(frozen=True)
class Summary:
    status: int
    imported: int
    already_present: int
    refused: int
    stderr: str


@dataclass(frozen=True)
class ImportRun:
    """An import running in another process; its output goes to files (readable while it runs, and after)."""

    proc: asyncio.subprocess.Process
    out: Path
    err: Path

    def stderr(self) -> str:
        return self.err.read_text()

    async def finish(self, deadline_s: float = IMPORT_DEADLINE_S) -> Summary:
        """Its summary once it exits; killed (never left behind) if it does not within the deadline."""
        try:
            await asyncio.wait_for(self.proc.wait(), deadline_s)
        except TimeoutError:
            raise AssertionError(f"the import still ran after {deadline_s:.0f}s: {self.stderr()[-3000:]}") from None
        finally:
            await self.kill()
        return summary_of(self.proc.returncode or 0, self.out.read_text(), self.stderr())

    async def wait_running_until(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        """Wait until ``check`` holds while the import still runs; fail with its output if it ended or hung."""

        async def holds() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"the import ended (exit {self.proc.returncode}) before {what}: "
                                     f"{self.out.read_text()} {self.stderr()[-3000:]}")
            return await check()

        try:
            await wait_until(holds, what, IMPORT_DEADLINE_S, 0.01)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the import said: {self.stderr()[-3000:]}") from None

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def start_import(args: Sequence[str], env: dict[str, str], logs: Path) -> ImportRun:
    """``python -m sharding import ARGS`` as a user types it, in ``env`` (its cluster's PORT and DATA_DIR)."""
    logs.mkdir(parents=True, exist_ok=True)
    number = len(list(logs.glob("import-*.out")))
    out, err = logs / f"import-{number}.out", logs / f"import-{number}.err"
    with out.open("w") as out_file, err.open("w") as err_file:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "sharding", "import", "--no-progress", *args,
                                                    cwd=REPO_ROOT, env=env, stdout=out_file, stderr=err_file)
    return ImportRun(proc, out, err)


def summary_of(status: int, stdout: str, stderr: str) -> Summary:
    lines = dict(line.split(": ", 1) for line in stdout.splitlines() if ": " in line)
    try:
        return Summary(status, int(lines["imported"]), int(lines["already present"]),
                       int(lines["refused"].split()[0]), stderr)
    except KeyError:
        raise AssertionError(f"no summary (exit {status}): {stdout!r} {stderr!r}") from None


async def run_import(args: Sequence[str], env: dict[str, str], logs: Path) -> Summary:
    return await (await start_import(args, env, logs)).finish()
