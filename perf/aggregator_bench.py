"""Aggregator benchmark (issue 3): memory per live user, cold past-hour GET, live GET throughput.

    python -m perf.aggregator_bench            # a few minutes; everything on 127.0.0.1

Starts three PostgreSQL shards (sharding.local.postgres.LocalPostgres, in a temp
dir), bulk-loads them with generate_series (benchmark data only: the write
path is exercised by the tests), runs one aggregator process
(``python -m aggregator.main``, uvloop) and prints:

1. memory per distinct user of a live hour of 1,000,000 users over 3 shards,
   as the aggregator process's RSS delta (before loading -> after the live
   hour holds every user) and, as a cross-check, tracemalloc of the same
   live-hour structure built in this process;
2. the cold first GET of a past hour of 100,000 users over 3 shards (10% of
   them on two shards), median over several hours, each asked once;
3. live-hour GET throughput measured with wrk, as a ratio to a trivial aiohttp
   handler (same body, same server settings) in the same run, alternating,
   median of several runs each.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from aggregator.fanout import FanOut
from aggregator.live import LiveHours
from aggregator.metrics import AggregatorMetrics
from aggregator.shards import ShardSet
from common.hours import current_hour, hour_start_ms
from common.pg import WaitBounds
from common.schema import migrate
from perf.postgres import bench_postgres
from perf.wrk import run_wrk
from sharding.local.processes import free_port

SHARDS = 3
TARGET_BYTES_PER_USER = 150
TARGET_COLD_MS = 300
TARGET_RATIO = 0.85
TRIVIAL_BODY = b"unique_users,1000000\nclicks,2000000\nimpressions,3000000\n"

LOAD_USERS = """
INSERT INTO hour_users (hour, username, version)
SELECT $1, 'user' || g, 1 FROM generate_series($2::bigint, $3::bigint) g
"""
LOAD_COUNTS = "INSERT INTO hour_counts (hour, clicks, impressions, version) VALUES ($1, $2, $3, 1)"


def trivial_app() -> object:
    """The baseline: aiohttp returning a constant body, no parsing, no lookup."""
    from aiohttp import web

    async def counts(_: web.Request) -> web.Response:
        return web.Response(body=TRIVIAL_BODY, headers={"Content-Type": "text/plain; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/analytics", counts)
    app.router.add_get("/healthz", counts)
    return app


def serve_trivial(port: int) -> None:
    import uvloop
    from aiohttp import web

    web.run_app(trivial_app(), host="127.0.0.1", port=port, access_log=None, print=None,  # type: ignore[arg-type]
                loop=uvloop.new_event_loop())



def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started, by its PID."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def wait_http(url: str, ok: str | None = None, timeout_s: float = 120.0) -> str:
    """Poll ``url`` until it answers 200 (containing ``ok`` if given)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    text = await resp.text()
                    if resp.status == 200 and (ok is None or ok in text):
                        return text
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready in {timeout_s} s")
            await asyncio.sleep(0.1)



async def load_hour(dsns: list[str], hour: int, users: int, overlap: float = 0.0) -> None:
    """``users`` distinct users over the shards; a fraction also on the next shard."""
    per_shard = users // len(dsns)
    extra = int(per_shard * overlap)

    async def one(i: int, dsn: str) -> None:
        first = i * per_shard + 1
        last = users if i == len(dsns) - 1 else first + per_shard - 1
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SET synchronous_commit = off")
            await conn.execute(LOAD_USERS, hour, first, last)
            if extra:  # users that also belong to the previous shard's range (failover)
                prev_first = ((i - 1) % len(dsns)) * per_shard + 1
                await conn.execute(LOAD_USERS, hour, prev_first, prev_first + extra - 1)
            await conn.execute(LOAD_COUNTS, hour, 2 * (last - first + 1), 3 * (last - first + 1))
            await conn.execute("ANALYZE hour_users")
        finally:
            await conn.close()

    await asyncio.gather(*(one(i, dsn) for i, dsn in enumerate(dsns)))


async def migrate_all(dsns: list[str]) -> None:
    for dsn in dsns:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()



async def traced_live_bytes(dsns: list[str], hour: int) -> int:
    """tracemalloc of one LiveHour (user dict, its strings, cursors) built by the aggregator's own code."""
    bounds = WaitBounds(acquire_s=60.0, statement_s=60.0)
    shards = ShardSet(None, tuple(dsns), pool_size=2, bounds=bounds)
    await shards.open()
    live = LiveHours(FanOut(60.0, AggregatorMetrics.create(), cold_read_slots=1, slot_wait_s=60.0))
    try:
        await live.refresh(shards, [hour], 0, lambda _: None)  # warm the pools and statements
        live.hours.clear()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await live.refresh(shards, [hour], 0, lambda _: None)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return after - before
    finally:
        await shards.close()


async def cold_gets_ms(base: str, hours: list[int], users: int) -> list[float]:
    """Time the first GET of each hour; each must be the exact union (``users`` distinct)."""
    timings = []
    async with aiohttp.ClientSession() as session:
        await (await session.get(f"{base}/healthz")).read()  # connection open before timing
        for hour in hours:
            started = time.perf_counter()
            async with session.get(f"{base}/analytics", params={"timestamp": str(hour_start_ms(hour) + 1)}) as resp:
                text = await resp.text()
            timings.append((time.perf_counter() - started) * 1000)
            if resp.status != 200 or not text.startswith(f"unique_users,{users}\n"):
                raise RuntimeError(f"cold GET of hour {hour}: {resp.status} {text!r}")
    return timings


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadRuns:
    """wrk runs against one server: requests/s and the server's CPU microseconds per request."""

    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    def run(self, url: str, pid: int, args: argparse.Namespace) -> None:
        cpu = cpu_seconds(pid)
        result = run_wrk(url, "", seconds=args.seconds, connections=args.connections)
        if result.errors:
            raise RuntimeError(f"{url}: {result.errors} errors under load")
        self.rps.append(result.requests_per_s)
        self.cpu_us.append((cpu_seconds(pid) - cpu) / result.requests * 1e6)


def throughput(ours_url: str, ours_pid: int, base_url: str, base_pid: int,
               args: argparse.Namespace) -> tuple[LoadRuns, LoadRuns]:
    """Alternate wrk runs on both servers (the machine's load drifts; pairs see the same drift)."""
    for url in (base_url, ours_url):  # warm-up, not counted
        run_wrk(url, "", seconds=1, connections=args.connections)
    ours, base = LoadRuns(), LoadRuns()
    for _ in range(args.rounds):
        base.run(base_url, base_pid, args)
        ours.run(ours_url, ours_pid, args)
    return ours, base



async def bench(dsns: list[str], args: argparse.Namespace) -> None:
    await migrate_all(dsns)
    live_hour = current_hour()
    past_hours = [live_hour - 24 - i for i in range(args.past_hours)]
    port, trivial_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"REACTIONS_SHARD_DSNS": ",".join(dsns), "REACTIONS_PORT": str(port),
           "REACTIONS_GRACE_S": "3600"}  # the live hour stays live if the hour turns mid-run
    aggregator = spawn([sys.executable, "-m", "aggregator.main"], env)
    trivial = spawn([sys.executable, "-m", "perf.aggregator_bench", "--serve-trivial", str(trivial_port)], {})
    try:
        await wait_http(f"{base}/readyz")
        live_url = f"{base}/analytics?timestamp={hour_start_ms(live_hour) + 1}"
        await wait_http(live_url, "unique_users,0\n")
        gc_settle = 2.0
        await asyncio.sleep(gc_settle)
        rss_before = rss_bytes(aggregator.pid)

        print(f"loading {args.users:,} users into the live hour over {SHARDS} shards ...", flush=True)
        await load_hour(dsns, live_hour, args.users)
        await wait_http(live_url, f"unique_users,{args.users}\n")
        await asyncio.sleep(gc_settle)
        rss_per_user = (rss_bytes(aggregator.pid) - rss_before) / args.users
        traced_per_user = await traced_live_bytes(dsns, live_hour) / args.users

        print(f"loading {args.past_hours} past hours of {args.past_users:,} users ...", flush=True)
        for hour in past_hours:
            await load_hour(dsns, hour, args.past_users, overlap=0.1)
        cold = await cold_gets_ms(base, past_hours, args.past_users)

        await wait_http(f"http://127.0.0.1:{trivial_port}/healthz")
        print(f"throughput: wrk, {args.connections} connections, {args.rounds} x {args.seconds} s each ...", flush=True)
        ours, baseline = throughput(live_url, aggregator.pid, f"http://127.0.0.1:{trivial_port}/analytics?timestamp=1",
                                    trivial.pid, args)
    finally:
        stop(aggregator)
        stop(trivial)
    report(rss_per_user, traced_per_user, cold, ours, baseline)


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"

def report(rss_per_user: float, traced_per_user: float, cold: list[float], ours: LoadRuns,
           baseline: LoadRuns) -> None:
    cold_median = statistics.median(cold)
    ratio = statistics.median(ours.rps) / statistics.median(baseline.rps)
    paired = statistics.median(o / b for o, b in zip(ours.rps, baseline.rps, strict=True))
    cpu_ratio = statistics.median(baseline.cpu_us) / statistics.median(ours.cpu_us)
    print()
    print(f"memory per live user (aggregator RSS delta)   {rss_per_user:7.1f} B  "
          f"target <= {TARGET_BYTES_PER_USER}  {verdict(rss_per_user <= TARGET_BYTES_PER_USER)}")
    print(f"memory per live user (tracemalloc LiveHour)   {traced_per_user:7.1f} B")
    print(f"cold past-hour GET, median of {len(cold)}            {cold_median:7.1f} ms "
          f"target <= {TARGET_COLD_MS}  {verdict(cold_median <= TARGET_COLD_MS)}   "
          f"(all: {', '.join(f'{c:.0f}' for c in cold)})")
    print(f"live GET req/s: aggregator {statistics.median(ours.rps):,.0f}, "
          f"trivial {statistics.median(baseline.rps):,.0f}"
          f"  (runs: {[round(x) for x in ours.rps]} vs {[round(x) for x in baseline.rps]})")
    print(f"server CPU per request: aggregator {statistics.median(ours.cpu_us):.1f} us, "
          f"trivial {statistics.median(baseline.cpu_us):.1f} us")
    print(f"live GET throughput ratio (medians)          {ratio:7.3f}    "
          f"target >= {TARGET_RATIO}  {verdict(ratio >= TARGET_RATIO)}")
    print(f"  same, median of paired runs                {paired:7.3f}")
    print(f"  same, from server CPU per request          {cpu_ratio:7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--past-users", type=int, default=100_000)
    parser.add_argument("--past-hours", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--serve-trivial", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_trivial:
        serve_trivial(args.serve_trivial)
        return
    with bench_postgres("reactions-aggbench-", SHARDS) as (_, servers):
        asyncio.run(bench([s.dsn for s in servers], args))


if __name__ == "__main__":
    main()
