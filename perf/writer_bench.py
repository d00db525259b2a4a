"""POST throughput of one writer process against its own PostgreSQL.

Group commit (the default) against the same writer with batching disabled
(one transaction per request), alternating rounds in the same run::

    python -m perf.writer_bench [--seconds 10] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from perf.wrk import POST_SCRIPT, WrkResult, median_result, run_wrk
from sharding.local.postgres import LocalPostgres
from sharding.local.processes import free_port, spawn, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
USERS = 100_000
NAIVE = "one transaction per request, pool 4"
NAIVE_WIDE = "one transaction per request, pool = connections"
BATCHED = "group commit (default)"


@contextlib.contextmanager
def writer(dsn: str, port: int, log: Path, **env: str) -> Iterator[str]:
    """A writer process on ``port``; SIGTERM (drain) on the way out."""
    record = spawn("writer", "writer", [sys.executable, "-m", "writer.main"], port=port, log=log, cwd=ROOT,
                   env={"PGPASSFILE": str(log.parent / "pgpass"),
                        "REACTIONS_DSN": dsn, "REACTIONS_PORT": str(port), "PYTHONPATH": str(ROOT), **env})
    try:
        wait_ready(record, timeout_s=30)
        yield f"http://{record.address}"
    finally:
        stop(record, timeout_s=60)


def row(name: str, r: WrkResult, base: WrkResult) -> str:
    ratio = f"{r.requests_per_s / base.requests_per_s:.2f}x"
    return f"| {name} | {r.requests_per_s:,.0f} | {ratio} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="reactions-writer-bench-"))
    os.chmod(work, 0o755)
    pg = LocalPostgres(work / "pg", free_port(), passfile=work / "pgpass")
    pg.start()
    variants = {
        # The same process with batching disabled, with its default pool ...
        NAIVE: {"REACTIONS_BATCHING": "0"},
        # ... and with one connection per client connection, as one might deploy it.
        NAIVE_WIDE: {"REACTIONS_BATCHING": "0", "REACTIONS_POOL_SIZE": str(args.connections)},
        BATCHED: {},
    }
    runs: dict[str, list[WrkResult]] = {name: [] for name in variants}
    try:
        for _ in range(args.rounds):
            for name, env in variants.items():
                with writer(pg.dsn, free_port(), work / "writer.log", **env) as url:
                    run_wrk(url, POST_SCRIPT % {"users": USERS}, seconds=2, connections=args.connections)  # warm-up
                    result = run_wrk(url, POST_SCRIPT % {"users": USERS}, seconds=args.seconds,
                                     connections=args.connections)
                runs[name].append(result)
                print(f"  {name}: {result.requests_per_s:,.0f} req/s, p99 {result.p99_ms:.1f} ms", flush=True)
    finally:
        pg.stop()
    medians = {name: median_result(results) for name, results in runs.items()}
    baseline = max(medians[NAIVE], medians[NAIVE_WIDE], key=lambda r: r.requests_per_s)
    print(f"\nOne writer process, {args.connections} connections, median of {args.rounds} x {args.seconds:g} s;")
    print("ratios against the faster of the two one-transaction-per-request writers")
    print("| writer | req/s | ratio | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for name, result in medians.items():
        print(row(name, result, baseline))

if __name__ == "__main__":
    main()
