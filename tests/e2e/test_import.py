"""``python -m sharding import`` end to end: the seed's table, through nginx's batch endpoint, exact against SQL.

Each test imports into its own range of hours of the module's cluster, so
their counts do not mix: the last 10 days, then older ranges.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from sharding.local.cluster import LocalCluster
from sharding.local.postgres import LocalPostgres
from tests.support.cluster import (
    base_url,
    cli_env,
    own_past_hour_ts,
    shards_holding,
    start_cluster,
    topology,
    wait_counts,
)
from tests.support.freeze import frozen
from tests.support.importing import (
    HourCounts,
    ImportRun,
    add_bad_rows,
    make_table,
    run_import,
    source_hours,
    start_import,
    wait_hours_equal,
)
from tests.support.passwords import session_passfile
from tests.support.shard_db import fetchval

SOURCE_DATABASE = "import_e2e"
# Past the staleness bound (2 s) and the settle of late writes, with a margin for this loaded machine.
SETTLE_S = 30.0
BAD_ROWS = [("alice", "like"), ("", "click"), ("bob", "")] * 5
# Each test starts its imports and waits for them with their own deadlines (IMPORT_DEADLINE_S): this is a margin.
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from start_cluster(shards=3, aggregators=1)


@pytest.fixture
def source_dsn(postgres: LocalPostgres) -> str:
    postgres.create_database(SOURCE_DATABASE)
    return postgres.dsn_for(SOURCE_DATABASE)


def env_of(cluster: LocalCluster) -> dict[str, str]:
    """A user's shell for this cluster (PORT, DATA_DIR), able to log in to the source database."""
    return {**cli_env(cluster), "PGPASSFILE": str(session_passfile())}


async def stored_between(cluster: LocalCluster, first_hour: int, last_hour: int) -> int:
    total = 0
    for shard in topology(cluster).shards:
        count = await fetchval(shard.dsn, "SELECT count(*) FROM reactions WHERE hour BETWEEN $1 AND $2",
                               first_hour, last_hour)
        assert isinstance(count, int)
        total += count
    return total


async def test_a_100000_row_table_over_the_last_10_days_is_imported_exactly(cluster: LocalCluster, source_dsn: str,
                                                                            tmp_path: Path) -> None:
    await make_table(source_dsn, rows=100_000, users=5_000, span_days=10)
    await add_bad_rows(source_dsn, BAD_ROWS)
    expected = await source_hours(source_dsn)
    rejects = tmp_path / "rejects.csv"
    summary = await run_import(["--from-dsn", source_dsn, "--rejects", str(rejects)], env_of(cluster), tmp_path)
    assert summary.status == 0, summary.stderr
    # Already present: parts committed by a try whose answer was in doubt (504), found by the retry.
    assert (summary.imported + summary.already_present, summary.refused) == (100_000, len(BAD_ROWS)), summary
    assert len(rejects.read_text().splitlines()) == 1 + len(BAD_ROWS)
    assert "event must be click or impression" in rejects.read_text()
    await wait_hours_equal(base_url(cluster), expected, SETTLE_S)


async def test_killed_midway_then_run_again_counts_every_row_once(cluster: LocalCluster, source_dsn: str,
                                                                  tmp_path: Path) -> None:
    rows = 20_000
    expected, args = await slow_import_of(source_dsn, "killed", rows, users=2_000, end_days=20, tmp_path=tmp_path)
    first, last = min(expected), max(expected)
    killed = await start_import(args, env_of(cluster), tmp_path)
    try:
        await killed.wait_running_until(lambda: at_least(cluster, first, last, rows // 10),
                                        "a tenth of the rows stored")
    finally:
        await killed.kill()
    at_kill = await stored_between(cluster, first, last)
    assert at_kill < rows, "killed midway (the import had not finished)"
    summary = await run_import(args, env_of(cluster), tmp_path)
    assert summary.status == 0, summary.stderr
    assert summary.imported + summary.already_present == rows
    assert summary.already_present >= at_kill
    await wait_hours_equal(base_url(cluster), expected, SETTLE_S)


async def slow_import_of(dsn: str, table: str, rows: int, users: int, end_days: float,
                         tmp_path: Path) -> tuple[HourCounts, list[str]]:
    """A table of its own over 2 days ending ``end_days`` ago, what SQL says of it, and the arguments of an import
    slow enough to be caught midway (small batches, two at a time)."""
    await make_table(dsn, rows=rows, users=users, span_days=2, end_days=end_days, table=table)
    args = ["--from-dsn", dsn, "--table", table, "--rejects", str(tmp_path / "rejects.csv"),
            "--batch-events", "200", "--concurrency", "2"]
    return await source_hours(dsn, table), args


async def retried(run: ImportRun, tries: int) -> bool:
    return run.stderr().count("): try ") >= tries


async def at_least(cluster: LocalCluster, first: int, last: int, count: int) -> bool:
    return await stored_between(cluster, first, last) >= count


async def test_a_shard_frozen_during_the_import_is_exact_after_the_thaw(cluster: LocalCluster, source_dsn: str,
                                                                        tmp_path: Path) -> None:
    rows = 8_000
    expected, args = await slow_import_of(source_dsn, "frozen", rows, users=800, end_days=30, tmp_path=tmp_path)
    first, last = min(expected), max(expected)
    run = await start_import(args, env_of(cluster), tmp_path)
    try:
        await run.wait_running_until(lambda: at_least(cluster, first, last, rows // 10), "a tenth of the rows stored")
        with frozen(cluster.postgres(topology(cluster).shards[1])):
            await run.wait_running_until(lambda: retried(run, 4), "the importer retrying while the shard is out")
        summary = await run.finish()
    finally:
        await run.kill()
    assert summary.status == 0, summary.stderr
    assert summary.imported + summary.already_present == rows
    await wait_hours_equal(base_url(cluster), expected, SETTLE_S)
    holding = await shards_holding(cluster, [f"u{i}" for i in range(800)])
    moved = {user: shards for user, shards in holding.items() if len(shards) != 1}
    assert not moved, f"strict placement: each user on its ring shard, not {moved}"


async def test_a_csv_file_with_bom_crlf_quotes_and_bad_rows(cluster: LocalCluster, tmp_path: Path) -> None:
    ts = own_past_hour_ts()
    users = [f"{name}-{ts}" for name in ('a,b', 'say "hi"', "é👨\u200d👩\u200d👧", "plain")]
    lines = ["timestamp,user,event"] + [f'{ts},"{u.replace(chr(34), 2 * chr(34))}",click' for u in users]
    lines += [f"{ts},{users[3]},impression", f"{ts},,click", f"{ts},x,like", "only,two", f'{ts},"line\nbreak",click']
    path = tmp_path / "events.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    rejects = tmp_path / "rejects.csv"
    summary = await run_import([str(path), "--rejects", str(rejects)], env_of(cluster), tmp_path)
    assert summary.status == 0, summary.stderr
    assert (summary.imported, summary.already_present, summary.refused) == (5, 0, 4)
    rejected = list(csv.reader(io.StringIO(rejects.read_text(), newline="")))
    assert [row[0] for row in rejected][1:] == ["record 6", "record 7", "record 8", "record 9"]
    async with aiohttp.ClientSession() as session:
        await wait_counts(session, base_url(cluster), ts, (4, 4, 1))
    again = await run_import([str(path), "--rejects", str(rejects)], env_of(cluster), tmp_path)
    assert (again.status, again.imported, again.already_present, again.refused) == (0, 0, 5, 4)
