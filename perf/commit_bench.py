"""The writer's commit path on its own: CPU per batch, writer side and PostgreSQL side, lever by lever.

One PostgreSQL of its own, one connection, batches committed one after
another (no HTTP, no other load), alternating rounds of each variant::

    python -m perf.commit_bench [--batch 11] [--batches 2000] [--rounds 3] [--users 2000]

Variants:
- ``pool per batch``: the commit as it was, each batch acquiring and releasing
  a pooled connection with bounded waits (``bounded_connection``);
- ``held connection``: the commit as the writer makes it (``HeldConnections``),
  without a deadline;
- ``held, guarded``: the same with a deadline, as the writer commits since the
  settle bound: one ``commit_guard`` row per batch, checked and removed by its
  deferred trigger when the transaction commits (docs/design.md, Invariants 8).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import uvloop

from common import partitions
from common.events import Event, Reaction
from common.hours import current_hour, hour_of, now_ms
from common.pg import HeldConnections, WaitBounds, bounded_connection
from common.schema import migrate
from perf.postgres import bench_postgres
from perf.procs import CLOCK_TICKS, cpu_ticks
from writer import db

BOUNDS = WaitBounds(acquire_s=0.5, statement_s=1.0)
# The guarded variant's deadline: far enough that no batch is refused.
GUARD_DEADLINE_S = 60.0
Commit = Callable[[Sequence[Reaction]], Awaitable[None]]


def batches(count: int, size: int, users: int) -> list[list[Reaction]]:
    ts = now_ms()
    return [[Reaction(ts, hour_of(ts), f"user{random.randrange(users)}", random.choice(list(Event)))
             for _ in range(size)] for _ in range(count)]


async def measure(commit: Commit, work: list[list[Reaction]], backend_pid: int) -> tuple[float, float]:
    """(writer CPU µs, PostgreSQL backend CPU µs) per batch over ``work``."""
    cpu, ticks = time.process_time(), cpu_ticks(backend_pid)
    for batch in work:
        await commit(batch)
    n = len(work)
    return ((time.process_time() - cpu) / n * 1e6,
            (cpu_ticks(backend_pid) - ticks) / CLOCK_TICKS / n * 1e6)


async def run(dsn: str, args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    setup = await asyncpg.connect(dsn)
    await migrate(setup)
    await partitions.ensure_ahead(setup, current_hour() // partitions.HOURS_PER_DAY)
    await setup.close()
    # One connection: the held one and the pool's are the same session, so one backend pid.
    pool = await db.open_pool(dsn, min_size=1, max_size=1, bounds=BOUNDS)
    held = HeldConnections(pool, BOUNDS)
    conn = await held.take()
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    await held.give_back(conn)
    hour = current_hour()

    async def pool_per_batch(batch: Sequence[Reaction]) -> None:
        async with bounded_connection(pool, BOUNDS) as c, asyncio.timeout(BOUNDS.statement_s):
            await db.commit_batch(c, batch, hour)

    async def held_connection(batch: Sequence[Reaction]) -> None:
        await db.commit_bounded(held, BOUNDS, batch, hour)

    async def held_guarded(batch: Sequence[Reaction]) -> None:
        await db.commit_bounded(held, BOUNDS, batch, hour, time.time() + GUARD_DEADLINE_S)

    variants: dict[str, Commit] = {"pool per batch": pool_per_batch, "held connection": held_connection,
                                   "held, guarded": held_guarded}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}

    async def one_round(name: str, count: int) -> tuple[float, float]:
        if name == "pool per batch":
            await held.close()  # the pool's one connection goes back to the pool for this variant
        return await measure(variants[name], batches(count, args.batch, args.users), backend)

    try:
        for name in variants:  # warm-up: statements prepared, plans cached
            await one_round(name, 100)
        for _ in range(args.rounds):
            for name in variants:
                results[name].append(await one_round(name, args.batches))
    finally:
        await held.close()
        await pool.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=11, help="events per batch")
    parser.add_argument("--batches", type=int, default=2000, help="batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=2000, help="distinct users the events draw from")
    args = parser.parse_args()
    with bench_postgres("reactions-commit-bench-") as (_, [pg]):
        results = uvloop.run(run(pg.dsn, args))
    print(f"\n{args.batch} events per batch from {args.users:,} users, {args.batches:,} batches per round, "
          f"median of {args.rounds} alternated rounds; CPU µs per batch")
    print("| variant | writer | PostgreSQL |")
    print("|---|---|---|")
    for name, rounds in results.items():
        print(f"| {name} | {statistics.median(r[0] for r in rounds):.0f} | "
              f"{statistics.median(r[1] for r in rounds):.0f} |")


if __name__ == "__main__":
    main()
