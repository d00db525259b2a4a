"""The mixed scenario: locust (perf/locustfile.py) headless, then the audit of every 204 against the GETs."""

from __future__ import annotations

import csv
import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from common.hours import current_hour, hour_start_ms
from perf.ledger import HourCounts, Ledger, audit
from perf.procs import ComponentCpu, run_measured
from perf.results import AuditRow, HistoryPoint, MixedRun, RequestStats
from sharding.local.cluster import REPO_ROOT

LOCUSTFILE = REPO_ROOT / "perf" / "locustfile.py"
# Late writes and past reads go this many hours back (the locustfile's REACTIONS_PAST_HOURS).
PAST_HOURS = 48
# Writers draw from this many usernames (the locustfile's REACTIONS_USERS).
POPULATION = 10_000
# In-flight requests finish (and their 204s are recorded) before locust exits.
STOP_TIMEOUT_S = 10
# The live hour lags commits by at most the refresh interval (1 s); past hours
# are invalidated by NOTIFY within the same bound. Give the GETs this long.
SETTLE_TIMEOUT_S = 15.0
SETTLE_POLL_S = 0.5
# Longer than the refresh interval: an unchanged live hour over this long is quiet.
QUIET_S = 1.5


@dataclass(frozen=True)
class MixedPlan:
    users: int
    rate_per_user: float  # requests/s per simulated user
    seconds: int


def read_hour(url: str, hour: int) -> HourCounts:
    with urllib.request.urlopen(f"{url}/analytics?timestamp={hour_start_ms(hour)}", timeout=10) as resp:
        return HourCounts.parse(resp.read().decode())


def read_hours(url: str, hours: range) -> dict[int, HourCounts]:
    return {hour: read_hour(url, hour) for hour in hours}


def quiesce(url: str, hour: int) -> None:
    """Wait until the live hour stops moving: writes of an earlier scenario may still be on their way in."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last = read_hour(url, hour)
    while time.monotonic() < deadline:
        time.sleep(QUIET_S)
        now = read_hour(url, hour)
        if now == last:
            return
        last = now


def settle(url: str, ledger: Ledger, before: dict[int, HourCounts]) -> tuple[list[AuditRow], float]:
    """Poll the touched hours until they show every acknowledged event exactly (or time runs out)."""
    start = time.monotonic()
    if not ledger.hours:
        return [], 0.0
    while True:
        rows = audit(ledger, before, read_hours(url, range(min(ledger.hours), max(ledger.hours) + 1)))
        waited = time.monotonic() - start
        if all(r.expected == r.counted for r in rows) or waited > SETTLE_TIMEOUT_S:
            return rows, waited
        time.sleep(SETTLE_POLL_S)


def number(raw: str) -> float:
    return float(raw) if raw not in ("", "N/A") else 0.0


def read_stats(prefix: Path) -> list[RequestStats]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return [RequestStats(row["Name"], int(row["Request Count"]), int(row["Failure Count"]),
                             number(row["Requests/s"]), number(row["50%"]), number(row["99%"]))
                for row in csv.DictReader(f)]


def read_history(prefix: Path) -> list[HistoryPoint]:
    with open(f"{prefix}_stats_history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    t0 = min(int(r["Timestamp"]) for r in rows)
    return [HistoryPoint(int(r["Timestamp"]) - t0, r["Name"], number(r["Requests/s"]), number(r["Failures/s"]),
                         number(r["50%"]), number(r["99%"])) for r in rows]


def read_failures(prefix: Path) -> dict[str, int]:
    with open(f"{prefix}_failures.csv", newline="") as f:
        return {f"{r['Method']} {r['Name']}: {r['Error']}": int(r["Occurrences"]) for r in csv.DictReader(f)}


def run_locust(url: str, plan: MixedPlan, work: Path, user_prefix: str) -> tuple[Ledger, Path, list[str], float]:
    ledger_file, prefix = work / "ledger.json", work / "mixed"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "REACTIONS_USERS": str(POPULATION),
           "REACTIONS_USER_PREFIX": user_prefix, "REACTIONS_PAST_HOURS": str(PAST_HOURS),
           "REACTIONS_RATE": str(plan.rate_per_user), "REACTIONS_LEDGER": str(ledger_file)}
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", url, "--headless",
            "-u", str(plan.users), "-r", str(plan.users), "-t", f"{plan.seconds}s", "--stop-timeout",
            str(STOP_TIMEOUT_S), "--csv", str(prefix), "--csv-full-history", "--only-summary",
            "--exit-code-on-error", "0", "--loglevel", "WARNING"]
    run = run_measured(argv, timeout_s=plan.seconds + STOP_TIMEOUT_S + 60, env=env)
    (work / "locust.out").write_text(run.stdout)
    if run.returncode != 0 or not ledger_file.exists():
        raise RuntimeError(f"locust exited with {run.returncode}:\n{run.stdout[-3000:]}")
    warnings = sorted({line.split("] ", 1)[-1].strip() for line in run.stdout.splitlines() if "CPU usage" in line})
    return Ledger.load(ledger_file), prefix, warnings, run.cores


def run_mixed(url: str, plan: MixedPlan, work: Path, cpu: ComponentCpu) -> MixedRun:
    """Snapshot the hours, run locust, then audit every acknowledged write against the GETs."""
    work.mkdir(parents=True, exist_ok=True)
    now = current_hour()
    # The run's own usernames: new in every hour, so unique_users must grow by exactly the run's user set.
    user_prefix = f"mix{time.strftime('%Y%m%d%H%M%S')}-u"
    quiesce(url, now)
    before = read_hours(url, range(now - PAST_HOURS - 1, now + 2))
    cpu.start()
    ledger, prefix, warnings, cores = run_locust(url, plan, work, user_prefix)
    components = cpu.stop(cores)
    rows, settled = settle(url, ledger, before)
    return MixedRun(
        tool="locust", users=plan.users, rate_per_user=plan.rate_per_user, seconds=plan.seconds,
        generator_cores=cores, generator_warnings=warnings, requests=read_stats(prefix),
        history=read_history(prefix), failures=read_failures(prefix), acknowledged=ledger.events, audit=rows,
        audit_settled_s=settled, components=components,
    )
