"""``python -m sharding import`` of the seed's table, end to end, beside its same-run baselines.

    python -m perf.import_bench                  # 1,000,000 rows over the last 10 days, a fresh 3-shard cluster
    python -m perf.import_bench --rows 20000     # a short run: the code path and the exactness check, not figures

What it measures, in one run:

- the import: ``python -m sharding import --from-dsn`` (another process, its
  default batches and concurrency) from a PostgreSQL of its own holding
  ``user_reaction`` made with generate_series, into the cluster's nginx;
  rows/s end to end (process start to exit);
- exact: every hour of the range, read through nginx's series, equals SQL
  on the source (unique users, clicks, impressions), or the run fails;
- where the machine's CPU goes during the import: cores used by the
  importer, nginx, the writers, the aggregators, the shards' PostgreSQL,
  the kernel's softirq and everything else (the source's PostgreSQL);
- baselines: the importer's own side alone (the table streamed and cut into
  batches, no HTTP), and the physical limit, COPY of the same rows into one
  PostgreSQL table (one transaction per 1,000 rows), each as a ratio.

The target (at least 100,000 rows/s end to end) is printed beside the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from common.hours import hour_of, now_ms
from perf.postgres import bench_postgres
from perf.procs import ComponentCpu
from perf.stacks import local_cluster
from sharding.importer.batches import BatchMaker
from sharding.importer.settings import ImportSettings
from sharding.importer.source import TableSource
from tests.support.importing import make_table, source_hours, start_import, wait_hours_equal

TARGET_ROWS_PER_S = 100_000
# How long the counts may take to show the import through nginx (staleness, late-write settle, a margin).
AUDIT_DEADLINE_S = 60.0
# The physical limit commits this many rows a transaction: the importer's batch size.
COPY_ROWS = 1_000


@dataclass(frozen=True)
class ImportPlan:
    rows: int
    days: float
    users: int
    shards: int
    # Passed on to the importer (its defaults unless given), to compare settings in the same run's terms.
    concurrency: int
    batch_events: int


@dataclass(frozen=True)
class ImportFigures:
    import_s: float
    read_s: float
    copy_s: float
    exact: bool
    summary: str
    cores: dict[str, float]


async def read_and_cut(dsn: str, batch_events: int) -> float:
    """Seconds to stream the table and cut it into the import's batches, no HTTP: the importer's own ceiling."""
    source = await TableSource.open(dsn)
    maker = BatchMaker(source.identity, batch_events, ImportSettings(url="").batch_bytes, now_ms())
    started = time.perf_counter()
    async with contextlib.aclosing(source.chunks()) as chunks:
        async for chunk in chunks:
            maker.feed(chunk)
    maker.finish()
    return time.perf_counter() - started


async def copy_into_one_table(dsn: str) -> float:
    """Seconds to COPY the same rows (as a shard stores them) into one table, COPY_ROWS a transaction."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS copy_limit")
        await conn.execute("CREATE TABLE copy_limit (ts bigint, hour bigint, username text, event smallint)")
        records = [(r["ts"], hour_of(r["ts"]), r["username"], 1 if r["reaction"] == "click" else 2)
                   for r in await conn.fetch("SELECT username, reaction, "
                                             "(extract(epoch FROM timestamp) * 1000)::bigint AS ts "
                                             "FROM user_reaction ORDER BY id")]
        started = time.perf_counter()
        for i in range(0, len(records), COPY_ROWS):
            async with conn.transaction():
                await conn.copy_records_to_table("copy_limit", records=records[i:i + COPY_ROWS])
        return time.perf_counter() - started
    finally:
        await conn.close()


async def measure(plan: ImportPlan, work: Path) -> ImportFigures:
    with bench_postgres("reactions-import-source-") as (root, (source,)):
        dsn = source.dsn
        print(f"making user_reaction: {plan.rows:,} rows over {plan.days:g} days", file=sys.stderr)
        await make_table(dsn, rows=plan.rows, users=plan.users, span_days=plan.days)
        expected = await source_hours(dsn)
        read_s = await read_and_cut(dsn, plan.batch_events)
        copy_s = await copy_into_one_table(dsn)
        with local_cluster(work, plan.shards, aggregators=2, service_env={}) as (_, stack):
            env = {**os.environ, "PGPASSFILE": str(root / "pgpass")}
            cpu = ComponentCpu(stack.components)
            cpu.start()
            reaped = children_cpu_s()
            started = time.perf_counter()
            run = await start_import(["--from-dsn", dsn, "--url", stack.url, "--rejects", str(work / "rejects.csv"),
                                      "--concurrency", str(plan.concurrency), "--batch-events", str(plan.batch_events)],
                                     env, work / "logs")
            summary = await run.finish(deadline_s=max(120.0, plan.rows / 5_000))
            import_s = time.perf_counter() - started
            # The importer is this process's only child to end meanwhile: its CPU is the reaped children's.
            cores = {"importer": (children_cpu_s() - reaped) / import_s, **cpu.stop()}
            cores["other"] = max(0.0, cores["other"] - cores["importer"])
            try:
                await wait_hours_equal(stack.url, expected, AUDIT_DEADLINE_S)
                exact = True
            except AssertionError as exc:
                print(exc, file=sys.stderr)
                exact = False
    counts = f"imported {summary.imported:,}, already present {summary.already_present:,}, " \
             f"refused {summary.refused:,}, exit {summary.status}"
    return ImportFigures(import_s, read_s, copy_s, exact and summary.status == 0, counts, cores)


def children_cpu_s() -> float:
    times = os.times()
    return times.children_user + times.children_system


def report(plan: ImportPlan, figures: ImportFigures) -> list[str]:
    rate = plan.rows / figures.import_s
    read_rate, copy_rate = plan.rows / figures.read_s, plan.rows / figures.copy_s
    verdict = "met" if rate >= TARGET_ROWS_PER_S else f"missed by {1 - rate / TARGET_ROWS_PER_S:.0%}"
    return [
        f"import of {plan.rows:,} rows over {plan.days:g} days into {plan.shards} shards "
        f"(batches of {plan.batch_events}, {plan.concurrency} in flight): {figures.summary}",
        f"  import end to end        {rate:>12,.0f} rows/s  ({figures.import_s:.1f} s)  "
        f"exact: {'yes' if figures.exact else 'NO'}",
        "  CPU (cores) " + ", ".join(f"{name} {used:.2f}" for name, used in figures.cores.items()),
        f"  importer alone, no HTTP  {read_rate:>12,.0f} rows/s  (import = {rate / read_rate:.2f}x of it)",
        f"  COPY into one table      {copy_rate:>12,.0f} rows/s  (import = {rate / copy_rate:.2f}x of it)",
        f"  target {TARGET_ROWS_PER_S:,} rows/s end to end: {verdict}",
    ]


def parse_args(argv: list[str] | None) -> ImportPlan:
    parser = argparse.ArgumentParser(prog="python -m perf.import_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=10.0, help="the rows span the last DAYS days (at most 30)")
    parser.add_argument("--users", type=int, default=None, help="distinct users (default: rows / 20)")
    parser.add_argument("--shards", type=int, default=3)
    defaults = ImportSettings(url="")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency, help="the importer's")
    parser.add_argument("--batch-events", type=int, default=defaults.batch_events, help="the importer's")
    args = parser.parse_args(argv)
    if not 0 < args.days <= 30 or args.rows < 1:
        parser.error("--rows at least 1, --days in (0, 30] (one series of hours reads them back)")
    return ImportPlan(args.rows, args.days, args.users or max(1, args.rows // 20), args.shards, args.concurrency,
                      args.batch_events)


def main(argv: list[str] | None = None) -> None:
    plan = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="reactions-import-bench-"))
    os.chmod(work, 0o755)  # PostgreSQL's OS user must traverse it
    try:
        figures = asyncio.run(measure(plan, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(report(plan, figures)))
    sys.exit(0 if figures.exact else 1)


if __name__ == "__main__":
    main()
