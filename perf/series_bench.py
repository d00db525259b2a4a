"""Series benchmark (issue 14): cold and warm 24-hour series against 24 one-hour GETs, and what a long range fits.

    python -m perf.series_bench            # about two minutes; everything on 127.0.0.1

Starts three PostgreSQL shards (in a temp dir), bulk-loads past hours with
generate_series (benchmark data only: 10% of each shard's users are also on
the next shard, so the union matters) and vacuums them as autovacuum would
have long before anyone asks for a past hour, runs one aggregator process with its
default bounds (shard timeout 1 s, series bound 1.5 s) and prints medians of
interleaved rounds, each round on hours nobody has read yet:

1. the cold 24-hour series (its hours read together, one statement per shard)
   and the same series warm (from the cache), against the baseline of the
   same run: 24 one-hour GETs one after another, cold then warm;
2. cold series of the longest range (744 hours) at a few user counts per
   hour: which fit the series bound, and the 503 of those that do not.

Every answer is checked: each row must count exactly the users loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import asyncpg

from common.hours import current_hour, hour_start_ms
from perf.aggregator_bench import SHARDS, migrate_all, spawn, stop, wait_http
from perf.postgres import bench_postgres
from sharding.local.processes import free_port

# Users of every hour in [$1, $2] with numbers in [$3, $4]; one statement for a whole range.
LOAD_USERS = """
INSERT INTO hour_users (hour, username, version)
SELECT h, 'user' || g, 1 FROM generate_series($1::bigint, $2::bigint) h, generate_series($3::bigint, $4::bigint) g
"""
LOAD_COUNTS = """
INSERT INTO hour_counts (hour, clicks, impressions, version)
SELECT h, $3, $4, 1 FROM generate_series($1::bigint, $2::bigint) h
"""
# Users of a shard that are also on the next one (a failover, a new shard): the union must drop them.
OVERLAP = 0.1
CHART_HOURS = 24


async def load_range(dsns: list[str], first: int, last: int, users: int) -> None:
    """``users`` distinct users in every hour of [first, last], spread over the shards with an overlap."""
    per_shard = users // len(dsns)

    async def one(i: int, dsn: str) -> None:
        low = i * per_shard + 1
        high = users if i == len(dsns) - 1 else low + per_shard - 1
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SET synchronous_commit = off")
            await conn.execute(LOAD_USERS, first, last, low, high)
            previous = ((i - 1) % len(dsns)) * per_shard + 1
            await conn.execute(LOAD_USERS, first, last, previous, previous + int(per_shard * OVERLAP) - 1)
            await conn.execute(LOAD_COUNTS, first, last, 2 * (high - low + 1), 3 * (high - low + 1))
            # Hours nobody has read for a while have been vacuumed (PostgreSQL's autovacuum
            # runs on inserts too): hint bits set, pages all-visible, as a real past hour's.
            await conn.execute("VACUUM ANALYZE hour_users")
            await conn.execute("VACUUM ANALYZE hour_counts")
        finally:
            await conn.close()

    await asyncio.gather(*(one(i, dsn) for i, dsn in enumerate(dsns)))


@dataclass
class Timed:
    """Milliseconds per run of one kind of request."""

    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def __str__(self) -> str:
        return f"{self.median:8.1f} ms  (runs: {', '.join(f'{r:.0f}' for r in self.runs)})"


def check_series(text: str, status: int, hours: int, users: int) -> None:
    rows = text.splitlines()[1:]
    if status != 200 or len(rows) != hours or any(row.split(",")[1] != str(users) for row in rows):
        raise RuntimeError(f"series: {status} {text[:200]!r}")


async def series_ms(session: aiohttp.ClientSession, base: str, first: int, last: int,
                    users: int) -> tuple[float, int, str]:
    """One series request: milliseconds, status and body (checked when 200)."""
    started = time.perf_counter()
    async with session.get(f"{base}/analytics/series",
                           params={"from": str(hour_start_ms(first)), "to": str(hour_start_ms(last))}) as resp:
        text = await resp.text()
    elapsed = (time.perf_counter() - started) * 1000
    if resp.status == 200:
        check_series(text, resp.status, last - first + 1, users)
    return elapsed, resp.status, text


async def one_hour_gets_ms(session: aiohttp.ClientSession, base: str, first: int, last: int, users: int) -> float:
    """The baseline: every hour of the range by its own GET, one after another, as a client without series would."""
    started = time.perf_counter()
    for hour in range(first, last + 1):
        async with session.get(f"{base}/analytics", params={"timestamp": str(hour_start_ms(hour))}) as resp:
            text = await resp.text()
        if resp.status != 200 or not text.startswith(f"unique_users,{users}\n"):
            raise RuntimeError(f"GET of hour {hour}: {resp.status} {text!r}")
    return (time.perf_counter() - started) * 1000


@dataclass
class Results:
    cold_series: Timed = field(default_factory=Timed)
    warm_series: Timed = field(default_factory=Timed)
    cold_gets: Timed = field(default_factory=Timed)
    warm_gets: Timed = field(default_factory=Timed)
    long_ranges: list[str] = field(default_factory=list)


async def rounds(dsns: list[str], base: str, args: argparse.Namespace, results: Results) -> None:
    """Interleaved rounds, each on fresh hours: cold then warm series, cold then warm one-hour GETs."""
    top = current_hour() - 48
    async with aiohttp.ClientSession() as session:
        await (await session.get(f"{base}/healthz")).read()  # a connection open before timing
        for r in range(args.rounds):
            series_last = top - 2 * r * CHART_HOURS
            series_first, gets_last = series_last - CHART_HOURS + 1, series_last - CHART_HOURS
            gets_first = gets_last - CHART_HOURS + 1
            await load_range(dsns, gets_first, series_last, args.users)
            elapsed, status, text = await series_ms(session, base, series_first, series_last, args.users)
            if status != 200:
                raise RuntimeError(f"cold 24-hour series refused: {text!r}")
            results.cold_series.runs.append(elapsed)
            results.warm_series.runs.append(statistics.median(
                [(await series_ms(session, base, series_first, series_last, args.users))[0] for _ in range(5)]))
            results.cold_gets.runs.append(await one_hour_gets_ms(session, base, gets_first, gets_last, args.users))
            results.warm_gets.runs.append(statistics.median(
                [await one_hour_gets_ms(session, base, gets_first, gets_last, args.users) for _ in range(5)]))
            print(f"round {r + 1}: cold series {results.cold_series.runs[-1]:.0f} ms, "
                  f"24 cold GETs {results.cold_gets.runs[-1]:.0f} ms", flush=True)


async def long_ranges(dsns: list[str], base: str, args: argparse.Namespace, results: Results) -> None:
    """A cold series of ``args.long_hours`` hours at each user count: answered, or 503 with its reason."""
    last = current_hour() - 48 - 2 * args.rounds * CHART_HOURS - 1
    async with aiohttp.ClientSession() as session:
        for users in args.long_users:
            first = last - args.long_hours + 1
            await load_range(dsns, first, last, users)
            elapsed, status, text = await series_ms(session, base, first, last, users)
            outcome = "answered" if status == 200 else f"{status}: {text.strip()}"
            results.long_ranges.append(f"{args.long_hours} hours x {users:,} users/hour "
                                       f"({args.long_hours * users:,} user-hours): {elapsed:6.0f} ms  {outcome}")
            print(results.long_ranges[-1], flush=True)
            last = first - 1


def report(results: Results, args: argparse.Namespace) -> None:
    print()
    print(f"{args.rounds} rounds, {args.users:,} users per hour over {SHARDS} shards ({OVERLAP:.0%} on two shards)")
    print(f"cold 24-hour series                     {results.cold_series}")
    print(f"warm 24-hour series (median of 5 each)  {results.warm_series}")
    print(f"baseline: 24 cold one-hour GETs          {results.cold_gets}")
    print(f"baseline: 24 warm one-hour GETs          {results.warm_gets}")
    print(f"cold series / 24 cold one-hour GETs     {results.cold_series.median / results.cold_gets.median:8.3f}")
    print(f"warm series / 24 warm one-hour GETs     {results.warm_series.median / results.warm_gets.median:8.3f}")
    print(f"cold series / warm series               {results.cold_series.median / results.warm_series.median:8.1f}")
    print("longest range (cold), against the 1.5 s series bound:")
    for line in results.long_ranges:
        print(f"  {line}")


async def bench(dsns: list[str], args: argparse.Namespace) -> None:
    await migrate_all(dsns)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    aggregator = spawn([sys.executable, "-m", "aggregator.main"],
                       {"REACTIONS_SHARD_DSNS": ",".join(dsns), "REACTIONS_PORT": str(port)})
    results = Results()
    try:
        await wait_http(f"{base}/readyz")
        await rounds(dsns, base, args, results)
        await long_ranges(dsns, base, args, results)
    finally:
        stop(aggregator)
    report(results, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="users per hour of the 24-hour series")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--long-hours", type=int, default=744)
    parser.add_argument("--long-users", type=int, nargs="*", default=[250, 500, 1000, 2000])
    args = parser.parse_args()
    with bench_postgres("reactions-seriesbench-", SHARDS) as (_, servers):
        asyncio.run(bench([s.dsn for s in servers], args))


if __name__ == "__main__":
    main()
