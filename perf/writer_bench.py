"""POST throughput and CPU per request of one writer process against its own PostgreSQL.

Group commit (the default) against the same writer with batching disabled
(one transaction per request), beside a trivial aiohttp 204 (perf/trivial.py),
wrk straight at each (no nginx), alternating rounds in the same run::

    python -m perf.writer_bench [--seconds 10] [--rounds 3] [--connections 32]

A lever is measured on its own by adding writers that differ by settings
only, for example the commit window::

    python -m perf.writer_bench --variant "no commit window:REACTIONS_COMMIT_WINDOW_MS=0"
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from perf.postgres import bench_postgres
from perf.procs import ComponentCpu
from perf.scrape import batch_details, writer_totals
from perf.wrk import POST_SCRIPT, WrkResult, median_result, run_wrk
from sharding.local.processes import ProcessRecord, free_port, spawn, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
USERS = 100_000
TRIVIAL = "trivial 204 (perf/trivial.py)"
NAIVE = "one transaction per request, pool 4"
NAIVE_WIDE = "one transaction per request, pool = connections"
BATCHED = "group commit (default)"


@dataclass(frozen=True)
class Run:
    wrk: WrkResult
    server_us: float  # CPU of the server process per request
    postgres_us: float  # CPU of PostgreSQL (postmaster and backends) per request
    events_per_commit: float


@contextlib.contextmanager
def writer(dsn: str, port: int, log: Path, **env: str) -> Iterator[ProcessRecord]:
    """A writer process on ``port``; SIGTERM (drain) on the way out."""
    record = spawn("writer", "writer", [sys.executable, "-m", "writer.main"], port=port, log=log, cwd=ROOT,
                   env={"PGPASSFILE": str(log.parent / "pgpass"),
                        "REACTIONS_DSN": dsn, "REACTIONS_PORT": str(port), "PYTHONPATH": str(ROOT), **env})
    try:
        wait_ready(record, timeout_s=30)
        yield record
    finally:
        stop(record, timeout_s=60)


@contextlib.contextmanager
def trivial(port: int, log: Path) -> Iterator[ProcessRecord]:
    record = spawn("trivial", "trivial", [sys.executable, "-m", "perf.trivial"], port=port, log=log, cwd=ROOT,
                   env={"REACTIONS_PORT": str(port), "PYTHONPATH": str(ROOT)})
    try:
        wait_ready(record, timeout_s=30)
        yield record
    finally:
        stop(record, timeout_s=10)


def measure(server: ProcessRecord, postgres_pid: int, args: argparse.Namespace) -> Run:
    url, script = f"http://{server.address}", POST_SCRIPT % {"users": USERS}
    run_wrk(url, script, seconds=2, connections=args.connections)  # warm-up
    is_writer = server.role == "writer"
    before = writer_totals([server.address]) if is_writer else {}
    cpu = ComponentCpu({"server": [server.pid], "postgres": [postgres_pid]})
    cpu.start()
    result = run_wrk(url, script, seconds=args.seconds, connections=args.connections)
    cores = cpu.stop(result.generator_cores)
    batches = batch_details(before, writer_totals([server.address])) if is_writer else {}
    per_request = 1e6 / result.requests_per_s
    return Run(result, cores["server"] * per_request, cores["postgres"] * per_request if is_writer else 0.0,
               batches.get("events_per_batch", 0.0))


def variant(raw: str) -> tuple[str, dict[str, str]]:
    name, _, settings = raw.partition(":")
    pairs = [p.split("=", 1) for p in settings.split(",") if p]
    if not name or any(len(p) != 2 or not p[0].startswith("REACTIONS_") for p in pairs):
        raise argparse.ArgumentTypeError(f"{raw!r} is not NAME:REACTIONS_X=V[,REACTIONS_Y=W]")
    return name, dict(pairs)  # type: ignore[arg-type]


def row(name: str, runs: list[Run], baseline: WrkResult) -> str:
    r = median_result([run.wrk for run in runs])
    server = statistics.median(run.server_us for run in runs)
    postgres = statistics.median(run.postgres_us for run in runs)
    batch = statistics.median(run.events_per_commit for run in runs)
    return (f"| {name} | {r.requests_per_s:,.0f} | {r.requests_per_s / baseline.requests_per_s:.2f}x | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {server:.0f} | {postgres:.0f} | {batch:.1f} | {r.errors} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--variant", type=variant, action="append", default=[], metavar="NAME:REACTIONS_X=V,...",
                        help="one more writer, differing by these settings")
    args = parser.parse_args()

    variants = {
        # The same process with batching disabled, with its default pool ...
        NAIVE: {"REACTIONS_BATCHING": "0"},
        # ... and with one connection per client connection, as one might deploy it.
        NAIVE_WIDE: {"REACTIONS_BATCHING": "0", "REACTIONS_POOL_SIZE": str(args.connections)},
        BATCHED: {},
        **dict(args.variant),
    }
    runs: dict[str, list[Run]] = {name: [] for name in (TRIVIAL, *variants)}
    with bench_postgres("reactions-writer-bench-") as (work, [pg]):
        postmaster = pg.pid()
        assert postmaster is not None, "PostgreSQL is not running"
        for _ in range(args.rounds):
            with trivial(free_port(), work / "trivial.log") as server:
                runs[TRIVIAL].append(measure(server, postmaster, args))
            for name, env in variants.items():
                with writer(pg.dsn, free_port(), work / "writer.log", **env) as server:
                    runs[name].append(measure(server, postmaster, args))
            for name, results in runs.items():
                r = results[-1]
                print(f"  {name}: {r.wrk.requests_per_s:,.0f} req/s, p99 {r.wrk.p99_ms:.1f} ms, "
                      f"{r.server_us:.0f} + {r.postgres_us:.0f} µs of CPU per request", flush=True)
    naive = max((median_result([r.wrk for r in runs[n]]) for n in (NAIVE, NAIVE_WIDE)), key=lambda r: r.requests_per_s)
    print(f"\nOne server process, wrk straight at it, {args.connections} connections, median of {args.rounds} x "
          f"{args.seconds:g} s; ratios against the faster of the two one-transaction-per-request writers")
    print("| server | req/s | ratio | p50 ms | p99 ms | server CPU µs/request | PostgreSQL CPU µs/request "
          "| events per commit | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, results in runs.items():
        print(row(name, results, naive))


if __name__ == "__main__":
    main()
