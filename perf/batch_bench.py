"""Batches through nginx (``POST /analytics/batch``), beside their same-run baselines.

    python -m perf.batch_bench                  # a fresh 3-shard cluster of its own
    python -m perf.batch_bench --seconds 3      # a short run: the code path and the audit, not figures

What it measures, on one cluster in one run:

- batches of ``--events`` (1,000) events from ``--concurrency`` client loops
  (aiohttp, in this process), each with its own Idempotency-Key: durable
  events/s, and each batch's latency (p50, p99);
- the single-POST path: wrk's POST scenario (perf/wrk.py) on the same cluster
  (``make bench`` passes its own POST durable figure instead);
- the physical limit: COPY of the same rows into one PostgreSQL table on one
  of the shards' servers, one transaction per 1,000 rows, as many
  connections as client loops;
- the audit: the run's hour, read through nginx, counts every event that a
  200 acknowledged, and nothing else.

``make bench`` runs it after its wrk rounds (perf/bench.py) and reports it
under "Batches"; the targets are in perf/report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from common.hours import MS_PER_HOUR, now_ms
from perf.procs import ComponentCpu
from perf.report import batch_summary
from perf.results import BatchRun
from perf.stacks import local_cluster
from perf.wrk import POST_SCRIPT, run_wrk
from sharding.config import load
from sharding.local.cluster import LocalCluster

# Distinct bodies the client loops take in turn (each sent with a fresh key),
# and the users they draw from.
BODIES = 16
USERS = 20_000
# How long the audit waits for the hour's GET to show every acknowledged event.
AUDIT_DEADLINE_S = 30.0
WARMUP_S = 1.0
# wrk's single-POST users (perf/bench.py uses the same).
WRK_USERS = 100_000


@dataclass(frozen=True)
class BatchPlan:
    seconds: float
    concurrency: int
    events: int


@dataclass(frozen=True)
class Body:
    text: bytes
    users: frozenset[str]
    clicks: int
    impressions: int


def make_bodies(plan: BatchPlan, ts0: int, tag: str) -> list[Body]:
    """BODIES bodies of ``plan.events`` events in one hour, over USERS users (clicks and impressions mixed)."""
    rng = random.Random(tag)
    bodies = []
    for _ in range(BODIES):
        lines, users, clicks = ["timestamp,user,event\n"], set(), 0
        for i in range(plan.events):
            user = f"bb-{tag}-{rng.randrange(USERS)}"
            event = "click" if rng.random() < 0.3 else "impression"
            clicks += event == "click"
            users.add(user)
            lines.append(f"{ts0 + i},{user},{event}\n")
        bodies.append(Body("".join(lines).encode(), frozenset(users), clicks, plan.events - clicks))
    return bodies


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    stored: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    acknowledged: list[Body] = field(default_factory=list)
    in_doubt: int = 0


async def client_loop(session: aiohttp.ClientSession, url: str, bodies: list[Body], start: int, stop_at: float,
                      tally: Tally) -> None:
    i = start
    while time.monotonic() < stop_at:
        body = bodies[i % len(bodies)]
        i += 1
        t = time.perf_counter()
        try:
            async with session.post(f"{url}/analytics/batch", data=body.text,
                                    headers={"Content-Type": "text/csv", "Idempotency-Key": uuid.uuid4().hex}) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.errors[type(exc).__name__] += 1
            tally.in_doubt += 1
            continue
        tally.latencies_ms.append((time.perf_counter() - t) * 1000)
        if status == 200:
            tally.stored += int(dict(line.split(",") for line in text.splitlines())["stored"])
            tally.acknowledged.append(body)
        else:
            tally.errors[str(status)] += 1
            tally.in_doubt += status != 503  # a 503 stored nothing


async def hour_counts(session: aiohttp.ClientSession, url: str, ts: int) -> tuple[int, int, int] | None:
    async with session.get(f"{url}/analytics?timestamp={ts}") as resp:
        if resp.status != 200:
            return None
        fields = dict(line.split(",") for line in (await resp.text()).splitlines())
        return int(fields["unique_users"]), int(fields["clicks"]), int(fields["impressions"])


async def audit(session: aiohttp.ClientSession, url: str, ts: int, tally: Tally) -> tuple[bool, str]:
    """Whether the hour (the run's own) counts exactly what the 200s acknowledged."""
    expected = (len(frozenset().union(*(b.users for b in tally.acknowledged))),
                sum(b.clicks for b in tally.acknowledged), sum(b.impressions for b in tally.acknowledged))
    deadline, seen = time.monotonic() + AUDIT_DEADLINE_S, None
    while time.monotonic() < deadline:
        seen = await hour_counts(session, url, ts)
        if seen == expected:
            break
        await asyncio.sleep(0.2)
    exact = seen == expected
    doubt = f"; {tally.in_doubt} batches in doubt" if tally.in_doubt else ""
    return exact, f"acknowledged {expected} (users, clicks, impressions), counted {seen}{doubt}"


@dataclass(frozen=True)
class Loaded:
    tally: Tally
    elapsed: float
    generator_cores: float
    components: dict[str, float]
    exact: bool
    audit: str


async def batches(url: str, plan: BatchPlan, cpu: ComponentCpu | None) -> Loaded:
    # An hour no one else writes to, within the raw log's retention.
    hour = now_ms() // MS_PER_HOUR - random.randrange(48, 500)
    ts0 = hour * MS_PER_HOUR + 1
    bodies = make_bodies(plan, ts0, uuid.uuid4().hex[:8])
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        # A second of warm-up (partitions, connections): audited, not timed.
        warm_until = time.monotonic() + WARMUP_S
        await asyncio.gather(*(client_loop(session, url, bodies, i, warm_until, tally)
                               for i in range(plan.concurrency)))
        warm_stored, warm_acknowledged = tally.stored, len(tally.acknowledged)
        tally.latencies_ms.clear()
        cpu_started = time.process_time()
        if cpu:
            cpu.start()
        t0 = time.monotonic()
        await asyncio.gather(*(client_loop(session, url, bodies, i, t0 + plan.seconds, tally)
                               for i in range(plan.concurrency)))
        elapsed = time.monotonic() - t0
        generator = (time.process_time() - cpu_started) / elapsed
        components = cpu.stop(generator) if cpu else {}
        exact, audit_text = await audit(session, url, ts0, tally)
    tally.stored -= warm_stored
    del tally.acknowledged[:warm_acknowledged]
    return Loaded(tally, elapsed, generator, components, exact, audit_text)


async def copy_limit(dsn: str, passfile: Path | None, plan: BatchPlan, rows: list[tuple[int, int, str, int]]) -> float:
    """Rows/s of COPY into one table, ``plan.events`` rows a transaction, ``plan.concurrency`` connections."""
    table = f"bench_copy_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn, passfile=str(passfile) if passfile else None)
    try:
        await admin.execute(f"CREATE TABLE {table} (ts bigint, hour bigint, username text, event smallint)")
        conns = [await asyncpg.connect(dsn, passfile=str(passfile) if passfile else None,
                                       server_settings={"synchronous_commit": "on"})
                 for _ in range(plan.concurrency)]
        copied = 0

        async def loop(conn: asyncpg.Connection, stop_at: float) -> None:
            nonlocal copied
            while time.monotonic() < stop_at:
                async with conn.transaction():
                    await conn.copy_records_to_table(table, records=rows, columns=["ts", "hour", "username", "event"])
                copied += len(rows)

        t0 = time.monotonic()
        await asyncio.gather(*(loop(c, t0 + plan.seconds) for c in conns))
        rate = copied / (time.monotonic() - t0)
        for conn in conns:
            await conn.close()
        return rate
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS {table}")
        await admin.close()


def copy_rows(body: Body) -> list[tuple[int, int, str, int]]:
    rows = []
    for line in body.text.decode().splitlines()[1:]:
        ts, user, event = line.split(",")
        rows.append((int(ts), int(ts) // MS_PER_HOUR, user, 1 if event == "click" else 2))
    return rows


def run_batch_bench(url: str, cluster: LocalCluster, plan: BatchPlan, components: dict[str, list[int]],
                    single_post_per_s: float | None = None) -> BatchRun:
    """The batch scenario, its COPY limit and (unless given) the single-POST baseline, on ``cluster``."""
    loaded = asyncio.run(batches(url, plan, ComponentCpu(components) if components else None))
    tally, elapsed = loaded.tally, loaded.elapsed
    if single_post_per_s is None:
        single_post_per_s = run_wrk(url, POST_SCRIPT % {"users": WRK_USERS}, seconds=plan.seconds,
                                    connections=32).requests_per_s
    shard = load(cluster.shards_file).shards[0]
    sample = make_bodies(plan, (now_ms() // MS_PER_HOUR - 3000) * MS_PER_HOUR, "copy")[0]
    copy_rate = asyncio.run(copy_limit(shard.dsn, cluster.passfile, plan, copy_rows(sample)))
    latencies = sorted(tally.latencies_ms) or [0.0]
    return BatchRun(
        events_per_batch=plan.events, concurrency=plan.concurrency, seconds=round(elapsed, 2),
        batches=len(tally.acknowledged), events_per_s=tally.stored / elapsed,
        p50_ms=statistics.median(latencies), p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        errors=dict(tally.errors), generator_cores=round(loaded.generator_cores, 3), copy_rows_per_s=copy_rate,
        single_post_per_s=single_post_per_s, exact=loaded.exact, audit=loaded.audit,
        components={k: round(v, 3) for k, v in loaded.components.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=3)
    args = parser.parse_args()
    plan = BatchPlan(args.seconds, args.concurrency, args.events)
    work = Path(tempfile.mkdtemp(prefix="reactions-batch-bench-"))
    work.chmod(0o755)  # PostgreSQL's OS user must traverse it
    with local_cluster(work, args.shards, 1, {}) as (cluster, stack):
        run = run_batch_bench(stack.url, cluster, plan, stack.components)
    shutil.rmtree(work, ignore_errors=True)
    for line in batch_summary(run):
        print(line)
    sys.exit(0 if run.exact else 1)


if __name__ == "__main__":
    main()
