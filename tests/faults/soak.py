"""``make chaos``: a soak of every fault under the audit load, on a cluster of its own.

    make chaos                                  # 3 minutes
    CHAOS_SECONDS=600 CHAOS_PORT=17000 make chaos

It starts a fresh local cluster (3 shards, 2 aggregators) in a temporary
DATA_DIR on CHAOS_PORT, then runs phases until CHAOS_SECONDS have passed:
each phase is a new audited load (users and keys of its own) with one fault
and its recovery in the middle (tests/faults/faults.py, in turn: writer
SIGKILL, PostgreSQL SIGKILL, aggregator SIGKILL, add and retire a shard,
SIGTERM of everything and a restart on the same data; then the gray
failures of tests/faults/gray.py: a frozen PostgreSQL, a database host cut
off without a reset, a slow link, a connection cut mid-commit, a database
replaced behind its DSN, a request and a commit delivered 10 s late). The cluster is a GrayCluster: shard c's database
on a host of its own (a network namespace: the run needs root, as CI has;
without it the gray phases are left out, said in one line). Each phase is audited
when it ends; at the end every phase's events are audited again together
(nothing acknowledged earlier was lost since). It prints the audit per phase
and per fault, how long unknown outcomes took to settle per fault
(tests/faults/settle.py), stops every process it started (by pid) and removes its
DATA_DIR (CHAOS_KEEP=1 keeps it). The exit status is 1 if anything was lost
or wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Iterator

from common.settings import SETTLE_BOUND_S
from sharding.local.cluster import ClusterError, LocalCluster
from sharding.local.processes import port_is_free
from sharding.local.settings import PORT_SPAN, ClusterSettings
from tests.faults.audit import AuditReport, audit
from tests.faults.faults import FAULTS, Fault
from tests.faults.gray import GRAY_FAULTS
from tests.faults.load import LoadPlan, LoadStats
from tests.faults.record import AuditRecord
from tests.faults.scenario import Outcome, base_url, run_scenario, sources
from tests.faults.settle import SettleReport
from tests.support.cluster import AUDIT_RETENTION_DAYS
from tests.support.gray_cluster import gray_cluster
from tests.support.netns import netns_unavailable
from tests.support.tmpdirs import world_traversable_tmpdir

DEFAULT_SECONDS = 180.0
DEFAULT_PORT = 17000
# A faster live-hour refresh than production's 1 s, so phases converge quickly.
# Raw events kept long enough for the audit to find every late one by its row.
SERVICE_ENV = {"REACTIONS_REFRESH_INTERVAL_MS": "100", "REACTIONS_RAW_RETENTION_DAYS": AUDIT_RETENTION_DAYS}
# Per phase: load before the fault and after the recovery, so each fault hits a busy cluster.
WARMUP_ACKS = 1500
AFTER_ACKS = 1500
PLAN = LoadPlan(base_url="", prefix="", users=500, writers=16, readers=3, rate=400.0, max_events=200_000,
                max_seconds=300.0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("CHAOS_SECONDS", DEFAULT_SECONDS)))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CHAOS_PORT", DEFAULT_PORT)))
    parser.add_argument("--keep", action="store_true", default=os.environ.get("CHAOS_KEEP") == "1",
                        help="keep the DATA_DIR (logs, shard data) at the end")
    return parser.parse_args()


def say(text: str) -> None:
    print(text, flush=True)


async def soak(cluster: LocalCluster, seconds: float, faults: dict[str, Fault]) -> list[Outcome]:
    """Phases with one fault each, in turn, until ``seconds`` have passed."""
    outcomes: list[Outcome] = []
    started = time.monotonic()
    names = list(faults)
    while time.monotonic() - started < seconds:
        name = names[len(outcomes) % len(names)]
        say(f"[{time.monotonic() - started:6.1f}s] phase {len(outcomes) + 1}: {name}")
        outcome = await run_scenario(cluster, name, faults[name], PLAN, WARMUP_ACKS, AFTER_ACKS)
        outcomes.append(outcome)
        say(f"          {outcome.report.line()}")
        say(f"          settle: {outcome.settle.line()}")
        for note in outcome.notes:
            say(f"          note: {note}")
        for problem in outcome.problems():
            say(f"          PROBLEM: {problem}")
    return outcomes


async def final_audit(cluster: LocalCluster, outcomes: list[Outcome]) -> AuditReport:
    """Every phase's events together, on the cluster as it is now (it started empty, so the baseline is 0)."""
    record = AuditRecord.merged(o.record for o in outcomes if o.record is not None)
    aggregators, dsns = sources(cluster)
    stats = LoadStats()  # no load of its own: the slowest answer is the phases'
    for outcome in outcomes:
        stats.timed(f"{outcome.report.name}: {outcome.report.slowest}", outcome.report.slowest_s)
    return await audit("all phases, at the end", base_url(cluster), aggregators, dsns, record, stats,
                       PLAN.staleness_s)


def print_summary(outcomes: list[Outcome], final: AuditReport, elapsed: float) -> None:
    say(f"\n== chaos audit: {len(outcomes)} phases in {elapsed:.0f}s ==")
    say(f"{'fault':<24}{'phases':>7}{'acknowledged':>14}{'unanswered':>12}{'unknown':>9}{'refused':>9}"
        f"{'counted':>10}{'duplicated':>12}{'lost':>6}{'wrong':>7}{'refused+counted':>17}{'slowest':>9}")
    per_fault: dict[str, list[AuditReport]] = defaultdict(list)
    for outcome in outcomes:
        per_fault[outcome.report.name].append(outcome.report)
    for name, reports in [*per_fault.items(), ("all phases, at the end", [final])]:
        say(f"{name:<24}{len(reports):>7}{sum(r.acknowledged for r in reports):>14}"
            f"{sum(r.unanswered for r in reports):>12}{sum(r.unknown for r in reports):>9}"
            f"{sum(r.refused for r in reports):>9}{sum(r.counted for r in reports):>10}"
            f"{sum(r.duplicated for r in reports):>12}{sum(len(r.lost) for r in reports):>6}"
            f"{sum(len(r.wrong) for r in reports):>7}{sum(len(r.refused_but_stored) for r in reports):>17}"
            f"{max(r.slowest_s for r in reports):>8.2f}s")
    say(f"\nhow long unknown outcomes took to settle (README, Invariants 8: within {SETTLE_BOUND_S:g}s of the answer):")
    for name, settles in per_fault_settle(outcomes).items():
        unknowns = sum(r.unknown_answers for r in settles)
        late = sum(r.late_changes for r in settles)
        longest = max(r.settled_s for r in settles)
        say(f"  {name:<26}{unknowns:>6} unknown answers, {late:>3} stored after them, settled within {longest:.1f}s")
    failed = sum(len(o.problems()) for o in outcomes) + len(final.problems())
    reads = sum((o.report.reads for o in outcomes), start=final.reads)
    say(f"reads during the load: {dict(reads)}")
    slowest = max(outcomes, key=lambda o: o.report.slowest_s, default=None)
    if slowest is not None:
        say(f"slowest answer: {slowest.report.slowest_s:.2f}s ({slowest.report.name}: {slowest.report.slowest})")
    say(f"lost = {sum(len(o.report.lost) for o in outcomes) + len(final.lost)}, "
        f"wrong answers = {sum(len(o.report.wrong) for o in outcomes) + len(final.wrong)}, "
        f"problems = {failed}")
    for problem in final.problems():
        say(f"PROBLEM (final): {problem}")


def per_fault_settle(outcomes: list[Outcome]) -> dict[str, list[SettleReport]]:
    settles: dict[str, list[SettleReport]] = defaultdict(list)
    for outcome in outcomes:
        settles[outcome.report.name].append(outcome.settle)
    return settles


def stop_on_signals() -> None:
    """SIGTERM stops the soak like Ctrl-C does: through the clean-up below."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)
    signal.signal(signal.SIGTERM, interrupt)


@contextlib.contextmanager
def chaos_cluster(settings: ClusterSettings) -> Iterator[tuple[LocalCluster, dict[str, Fault]]]:
    """A started GrayCluster and every fault, or, without network namespaces, a LocalCluster and the crash faults."""
    reason = netns_unavailable()
    if reason is None:
        with gray_cluster(settings) as gray:
            yield gray, {**FAULTS, **GRAY_FAULTS}
        return
    say(f"no gray-failure phases: {reason}")
    cluster = LocalCluster(settings)
    cluster.acquire_run_lock()
    try:
        cluster.start()
        yield cluster, dict(FAULTS)
    finally:
        say("stopping every process of the chaos cluster (by pid) ...")
        cluster.stop()
        cluster.release_run_lock()


def main() -> None:
    args = parse_args()
    if not port_is_free(args.port) or args.port + PORT_SPAN > 65535:
        sys.exit(f"error: CHAOS_PORT={args.port} is in use or too high; set CHAOS_PORT to a free port")
    root = world_traversable_tmpdir("reactions-chaos-")
    settings = ClusterSettings(port=args.port, shards=3, aggregators=2, data_dir=root / "data",
                               service_env=SERVICE_ENV)
    os.environ["PGPASSFILE"] = str(settings.pgpass)  # the audit's own connections to the shards
    stop_on_signals()
    started = time.monotonic()
    ok = False
    try:
        say(f"chaos: a fresh cluster on 127.0.0.1:{args.port} in {root}, for {args.seconds:.0f}s")
        with chaos_cluster(settings) as (cluster, faults):
            outcomes = asyncio.run(soak(cluster, args.seconds, faults))
            final = asyncio.run(final_audit(cluster, outcomes))
            print_summary(outcomes, final, time.monotonic() - started)
            ok = not final.problems() and not any(o.problems() for o in outcomes)
    except (ClusterError, KeyboardInterrupt) as exc:
        say(f"chaos stopped: {type(exc).__name__} {exc}")
    finally:
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

