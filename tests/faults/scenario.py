"""One audited run: baseline, load, a fault and its recovery while it runs, then the audit."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from dataclasses import dataclass, field, replace

from common.hours import current_hour
from sharding.config import load as load_topology
from sharding.local.cluster import LocalCluster
from tests.faults.audit import AuditReport, audit, take_baseline
from tests.faults.faults import PROGRESS_ACKS, Fault, heal, progress
from tests.faults.load import Load, LoadPlan
from tests.faults.record import AuditRecord
from tests.faults.settle import SettleReport, watching

# Acknowledged events before the fault starts: the load is in full swing.
WARMUP_ACKS = 150
# How far back late writes go: one recent hour (cached, invalidated by NOTIFY) and one far one.
FAR_PAST_HOURS = (48, 200_000)  # writes before 2000 are refused


@dataclass
class Outcome:
    report: AuditReport
    record: AuditRecord | None = None
    notes: list[str] = field(default_factory=list)
    fault_error: str | None = None
    settle: SettleReport = field(default_factory=SettleReport)

    def problems(self) -> list[str]:
        return ([f"fault check failed: {self.fault_error}"] if self.fault_error else []) + self.report.problems()


def base_url(cluster: LocalCluster) -> str:
    return f"http://127.0.0.1:{cluster.settings.port}"


def new_plan(cluster: LocalCluster, name: str, template: LoadPlan | None = None) -> LoadPlan:
    """A plan with users and keys of its own, late writes to the previous hour and a far past one."""
    tag = "".join(c for c in name.lower() if c.isalnum())[:10]
    hour = current_hour()
    past = (hour - 1, hour - random.randrange(*FAR_PAST_HOURS))
    plan = template or LoadPlan(base_url=base_url(cluster), prefix="")
    return replace(plan, base_url=base_url(cluster), prefix=f"{tag}-{secrets.token_hex(3)}-", past_hours=past)


def sources(cluster: LocalCluster) -> tuple[list[str], list[str]]:
    """The aggregators' URLs and every shard's DSN (retired ones too: their data is still read)."""
    topology = load_topology(cluster.shards_file)
    return [f"http://{a}" for a in topology.aggregators], [s.dsn for s in topology.shards]


async def run_scenario(cluster: LocalCluster, name: str, fault: Fault | None, plan: LoadPlan | None = None,
                       warmup_acks: int = WARMUP_ACKS, after_acks: int = PROGRESS_ACKS) -> Outcome:
    """Baseline, load, fault (with recovery), more load, stop, audit."""
    plan = new_plan(cluster, name, plan)
    record = AuditRecord(plan.prefix)
    await take_baseline(plan.base_url, record, [current_hour(), *plan.past_hours])
    load = Load(plan, record)
    running = asyncio.create_task(load.run(), name=f"load {name}")
    outcome = Outcome(AuditReport(name), record)
    async with watching(record, sources(cluster)[1]) as watch:
        try:
            await progress(load, "before the fault", warmup_acks)
            if fault is None:
                await running  # no fault: the load runs to its own bound
            else:
                outcome.notes = await fault(cluster, load)
                await progress(load, "after the recovery", after_acks)
        except Exception as exc:  # reported with the audit; the cluster is healed so the audit can run
            outcome.fault_error = f"{type(exc).__name__}: {exc}"
        finally:
            load.stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        if running.exception() is not None:
            raise running.exception()  # type: ignore[misc]
        if outcome.fault_error is not None:
            outcome.notes.append("healed: " + ", ".join(await asyncio.to_thread(heal, cluster)))
        outcome.settle = await watch.finish()
    aggregators, dsns = sources(cluster)
    outcome.report = await audit(name, plan.base_url, aggregators, dsns, record, load.stats, plan.staleness_s)
    return outcome
