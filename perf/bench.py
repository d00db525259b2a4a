"""``make bench``: Reactions beside its same-run baselines, written up in perf/results/<timestamp>/.

    python -m perf.bench                        # a fresh local cluster of its own, a few minutes
    python -m perf.bench --url http://127.0.0.1:8000 --data-dir var   # the cluster of `make run`

Starts (or finds) the cluster, the ceiling stack (trivial aiohttp behind the
same nginx template) and the naive stack (batching-disabled writers), then:
wrk rounds of every scenario, interleaved; batches of 1,000 events beside
COPY (perf/batch_bench.py); the mixed locust scenario and its audit; py-spy
profiles of the processes behind any missed target; the report.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from perf.batch_bench import BatchPlan, run_batch_bench
from perf.mixed import MixedPlan, run_mixed
from perf.procs import ComponentCpu
from perf.profiling import profile_while
from perf.report import evaluate, write_report
from perf.results import (
    BASELINE,
    GET_CEILING,
    GET_CURRENT,
    IDLE_STACKS,
    POST_CEILING,
    POST_CEILING_UNIX,
    POST_DURABLE,
    POST_NAIVE,
    TARGET,
    BenchResults,
    Profile,
    Round,
    Scenario,
)
from perf.scrape import batch_details, writer_totals
from perf.stacks import Stack, ceiling_stack, local_cluster, naive_stack, running_cluster
from perf.wrk import GET_SCRIPT, POST_SCRIPT, run_wrk
from sharding.config import Topology, load
from sharding.local.cluster import REPO_ROOT, LocalCluster
from sharding.local.postgres import pg_bin

RESULTS_DIR = REPO_ROOT / "perf" / "results"
# wrk's writers draw from this many usernames (distinct from the mixed run's).
WRK_USERS = 100_000
# nginx flushes its buffered access log this often (sharding/nginx.py), plus a margin.
ACCESS_LOG_FLUSH_S = 1.2
CACHE_STATUS = re.compile(r" cache=(\S+)")


@dataclass(frozen=True)
class Plan:
    seconds: int
    rounds: int
    connections: int
    warmup_s: int
    pause_s: float
    mixed: MixedPlan
    profile_s: int
    batch: BatchPlan


@dataclass(frozen=True)
class Measurement:
    key: str
    title: str
    method: str
    role: str
    stack: Stack

    @property
    def script(self) -> str:
        return GET_SCRIPT if self.method == "GET" else POST_SCRIPT % {"users": WRK_USERS}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def log_size(stack: Stack) -> int:
    return stack.access_log.stat().st_size if stack.access_log and stack.access_log.exists() else 0


def cache_statuses(stack: Stack, offset: int) -> dict[str, int]:
    """GETs nginx logged from ``offset`` on, by the cache status it logged (after its buffer's flush)."""
    if stack.access_log is None or not stack.access_log.exists():
        return {}
    time.sleep(ACCESS_LOG_FLUSH_S)
    with stack.access_log.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    # "-": nginx logged no cache status (the cache is off, or the request had no key).
    return dict(Counter(m.group(1) for line in lines if '"GET /analytics?' in line
                        and (m := CACHE_STATUS.search(line)) is not None and m.group(1) != "-"))


def measure(m: Measurement, plan: Plan, seconds: int, t0: float, idle: list[int]) -> Round:
    """One wrk run, with the CPU of the stack's parts, of the other (idle) stacks and of the rest."""
    cpu = ComponentCpu({**m.stack.components, IDLE_STACKS: idle})
    started = time.monotonic() - t0
    batches_before = writer_totals(m.stack.writers) if m.method == "POST" else {}
    log_offset = log_size(m.stack)
    cpu.start()
    r = run_wrk(m.stack.url, m.script, seconds=seconds, connections=plan.connections)
    components = cpu.stop(r.generator_cores)
    batches = batch_details(batches_before, writer_totals(m.stack.writers)) if batches_before else {}
    cache = cache_statuses(m.stack, log_offset) if m.method == "GET" else {}
    return Round(r.requests_per_s, r.p50_ms, r.p99_ms, r.requests, r.errors, r.generator_cores, round(started, 1),
                 {k: round(v, 3) for k, v in components.items()}, batches, cache)


def idle_pids(m: Measurement, measurements: list[Measurement]) -> list[int]:
    """The processes of the stacks ``m`` does not load (shared ones, like PostgreSQL, are ``m``'s)."""
    own = {pid for pids in m.stack.components.values() for pid in pids}
    others = {pid for o in measurements for pids in o.stack.components.values() for pid in pids}
    return sorted(others - own)


def run_rounds(measurements: list[Measurement], plan: Plan, t0: float) -> list[Scenario]:
    """A warm-up of each, then round 1 of every scenario, round 2 of every scenario, ..."""
    for m in measurements:
        run_wrk(m.stack.url, m.script, seconds=plan.warmup_s, connections=plan.connections)
    rounds: dict[str, list[Round]] = {m.key: [] for m in measurements}
    for i in range(plan.rounds):
        for m in measurements:
            # The previous scenario's after-effects (aggregators reading new rows, PostgreSQL's
            # background writer) settle first; what remains shows in the "idle stacks" column.
            time.sleep(plan.pause_s)
            r = measure(m, plan, plan.seconds, t0, idle_pids(m, measurements))
            rounds[m.key].append(r)
            say(f"round {i + 1}/{plan.rounds} {m.title}: {r.requests_per_s:,.0f} req/s, p50 {r.p50_ms:.2f} ms, "
                f"p99 {r.p99_ms:.2f} ms, {r.errors} errors, wrk {r.generator_cores:.2f} cores")
    return [Scenario(m.key, m.title, m.method, m.role, "wrk", plan.connections, rounds[m.key]) for m in measurements]


def measurements_for(reactions: Stack, ceiling: Stack, naive: Stack | None,
                     ceiling_unix: Stack | None = None) -> list[Measurement]:
    found = [
        Measurement(GET_CEILING, "GET ceiling (trivial aiohttp, nginx cache off)", "GET", BASELINE, ceiling),
        Measurement(GET_CURRENT, "GET current hour", "GET", TARGET, reactions),
        Measurement(POST_CEILING, "POST ceiling (trivial 204)", "POST", BASELINE, ceiling),
        Measurement(POST_CEILING_UNIX, "POST ceiling over Unix sockets", "POST", BASELINE, ceiling_unix)
        if ceiling_unix else None,
        Measurement(POST_NAIVE, "POST batching disabled", "POST", BASELINE, naive) if naive else None,
        Measurement(POST_DURABLE, "POST durable (group commit)", "POST", TARGET, reactions),
    ]
    return [m for m in found if m is not None]


def profile_misses(results: BenchResults, cluster: LocalCluster, reactions: Stack, plan: Plan,
                   directory: Path) -> list[Profile]:
    """py-spy on one aggregator if a GET goal was missed, on one writer if a POST goal was."""
    missed = {c.method for c in evaluate(results) if c.met is False}
    profiles = []
    for method, role in (("GET", "aggregator"), ("POST", "writer")):
        records = cluster.registry.all(role)
        if method not in missed or not records:
            continue
        m = next(m for m in measurements_for(reactions, reactions, None) if m.method == method and m.role == TARGET)
        say(f"profiling {records[0].name} under {m.title} ({plan.profile_s} s)")
        profile = profile_while(records[0].pid, records[0].name, m.title, plan.profile_s,
                                directory / f"profile-{records[0].name}.txt",
                                functools.partial(run_wrk, m.stack.url, m.script, seconds=plan.profile_s + 1,
                                                  connections=plan.connections))
        if profile is not None:
            profiles.append(profile)
    return profiles


def version(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    return "?"


def machine_info() -> dict[str, str]:
    return {
        "cpus": str(os.cpu_count()),
        "python": f"Python {sys.version.split()[0]}",
        "nginx": version(["/usr/sbin/nginx", "-v"]),
        "postgres": version([pg_bin("postgres"), "--version"]),
        "wrk": version(["wrk", "-v"]).split(" [")[0],
        "locust": importlib.metadata.version("locust"),
    }


def bench(args: argparse.Namespace, plan: Plan, directory: Path) -> BenchResults:
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="reactions-bench-"))
    os.chmod(work, 0o755)  # PostgreSQL's OS user must traverse it
    results = BenchResults(started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), machine=machine_info(),
                           config={})
    with contextlib.ExitStack() as stack:
        say("starting the cluster" if args.url is None else f"using the cluster at {args.url}")
        cluster: LocalCluster | None
        if args.url is None:
            cluster, reactions = stack.enter_context(local_cluster(work, args.shards, args.aggregators,
                                                                      dict(args.service_env), args.writer_sockets))
        else:
            cluster, reactions = running_cluster(args.url, args.data_dir)
        topology: Topology | None = load(cluster.shards_file) if cluster else None
        shards = len(topology.active_shards) if topology else args.shards
        aggregators = len(topology.aggregators) if topology else args.aggregators
        results.config = {
            "shards": shards, "aggregators": aggregators, "connections": plan.connections, "rounds": plan.rounds,
            "seconds": plan.seconds, "command": " ".join(["python -m perf.bench", *sys.argv[1:]]),
            "cluster": "started for this run" if args.url is None else f"running at {args.url}",
            "service_env": " ".join(f"{k}={v}" for k, v in args.service_env),
            "writer_sockets": "nginx to writers over Unix sockets" if args.writer_sockets else "loopback TCP",
        }
        say("starting the baselines (ceiling and batching-disabled writers)")
        ceiling = stack.enter_context(ceiling_stack(work, shards, aggregators))
        # With sockets, the ceiling over sockets too: the goal stays the ratio to the TCP one.
        ceiling_unix = stack.enter_context(ceiling_stack(work, shards, aggregators, writer_sockets=True)) \
            if args.writer_sockets else None
        naive = None
        if topology is not None:
            naive = stack.enter_context(naive_stack(work, topology, reactions.components.get("postgres", []),
                                                    cluster.passfile if cluster else None))
        else:
            results.notes.append(f"no shard file under {args.data_dir}: the batching-disabled baseline, the CPU "
                                 "split and the profiles were skipped (pass --data-dir of the running cluster)")
        chosen = [m for m in measurements_for(reactions, ceiling, naive, ceiling_unix)
                  if args.only in (None, m.method)]
        results.scenarios = run_rounds(chosen, plan, t0)
        if plan.batch.seconds > 0 and cluster is not None and args.only is None:
            say(f"batches: {plan.batch.events} events each, {plan.batch.concurrency} client loops, "
                f"{plan.batch.seconds:g} s; then COPY into one table")
            single = results.scenario(POST_DURABLE)
            results.batch = run_batch_bench(reactions.url, cluster, plan.batch, reactions.components,
                                            single.median("requests_per_s") if single else None)
        if plan.mixed.seconds > 0:
            say(f"mixed scenario: locust, {plan.mixed.users} users x {plan.mixed.rate_per_user:g} req/s, "
                f"{plan.mixed.seconds} s")
            results.mixed = run_mixed(reactions.url, plan.mixed, work / "mixed", ComponentCpu(reactions.components))
        if cluster is not None and plan.profile_s > 0:
            directory.mkdir(parents=True, exist_ok=True)
            results.profiles = profile_misses(results, cluster, reactions, plan, directory)
        say("stopping everything")
    results.notes.append(f"the whole bench took {time.monotonic() - t0:.0f} s")
    if args.keep_work:
        results.notes.append(f"work files (logs, PostgreSQL data, locust CSVs) kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)  # only on success: a failed run leaves its logs
    return results


def env_pair(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    if not sep or not name.startswith("REACTIONS_"):
        raise argparse.ArgumentTypeError(f"{raw!r} is not REACTIONS_NAME=VALUE")
    return name, value


def parse_args() -> tuple[argparse.Namespace, Plan]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running cluster's nginx (default: start one for the run)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "var")),
                        help="with --url: that cluster's DATA_DIR (shards, pids)")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--aggregators", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5, help="length of one wrk round")
    # Many short interleaved rounds: a burst of other work on the machine spoils one round, not the median.
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk before the rounds, per scenario")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of quiet before each round")
    parser.add_argument("--mixed-users", type=int, default=40)
    parser.add_argument("--mixed-rate", type=float, default=25.0, help="requests/s per locust user")
    parser.add_argument("--mixed-seconds", type=int, default=40, help="0: no mixed scenario")
    parser.add_argument("--only", choices=("GET", "POST"), help="only the wrk scenarios of one method (experiments)")
    parser.add_argument("--profile-seconds", type=int, default=8, help="0: no profiles")
    parser.add_argument("--batch-seconds", type=float, default=10.0, help="0: no batch scenario")
    parser.add_argument("--batch-concurrency", type=int, default=8, help="batch client loops")
    parser.add_argument("--batch-events", type=int, default=1000, help="events per batch")
    parser.add_argument("--service-env", type=env_pair, action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the cluster's writers and aggregators (experiments)")
    parser.add_argument("--writer-sockets", type=int, choices=(0, 1), default=0,
                        help="1: the started cluster's nginx reaches its writers over Unix sockets (WRITER_SOCKETS=1), "
                             "and the POST ceiling is measured over sockets too")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep-work", action="store_true", help="keep logs and PostgreSQL data of the run")
    args = parser.parse_args()
    if args.url is not None and not args.url.startswith("http://127.0.0.1:"):
        parser.error("--url must be http://127.0.0.1:PORT (benchmarks target loopback only)")
    if args.url is not None and args.writer_sockets:
        parser.error("--writer-sockets is for the cluster started by the run (a running one has its own choice)")
    return args, Plan(args.seconds, args.rounds, args.connections, args.warmup, args.pause,
                      MixedPlan(args.mixed_users, args.mixed_rate, args.mixed_seconds), args.profile_seconds,
                      BatchPlan(args.batch_seconds, args.batch_concurrency, args.batch_events))


def main() -> None:
    args, plan = parse_args()
    # SIGTERM unwinds like Ctrl-C, so every process started here is stopped by its pid.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    directory = args.out / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report = write_report(bench(args, plan, directory), directory)
    latest = args.out / "latest"
    latest.unlink(missing_ok=True)
    latest.symlink_to(directory.name)
    print(report.read_text())
    say(f"report: {report}")


if __name__ == "__main__":
    main()
