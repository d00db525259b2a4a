"""The audit harness on a healthy cluster: exact, and it notices what it must."""

from __future__ import annotations

import asyncpg

from common.partitions import day_of_hour, ensure_days
from sharding.local.cluster import LocalCluster
from tests.faults.audit import assert_clean
from tests.faults.load import Load, LoadPlan
from tests.faults.scenario import base_url, run_scenario, sources


async def test_a_healthy_cluster_counts_every_acknowledged_event_exactly(cluster: LocalCluster) -> None:
    outcome = await run_scenario(cluster, "healthy", None, LoadPlan(base_url(cluster), "", max_events=1500))
    print(outcome.report.line(), outcome.report.posts, outcome.report.reads)
    assert_clean(outcome.report)
    assert outcome.report.acknowledged >= 1000
    assert outcome.report.unanswered == outcome.report.refused == 0
    assert outcome.report.counted == outcome.report.acknowledged == outcome.report.stored


async def test_the_audit_notices_a_lost_event_and_a_row_nobody_sent(cluster: LocalCluster) -> None:
    """Tamper with the shards behind the service's back: the audit must say so."""
    tampered: dict[str, str] = {}

    async def tamper(cluster: LocalCluster, load: Load) -> list[str]:
        victim = next(s for s in load.record.events if s.acked_at is not None)
        _, dsns = sources(cluster)
        for dsn in dsns:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("DELETE FROM reactions WHERE idem_key = $1", victim.key)
            finally:
                await conn.close()
        conn = await asyncpg.connect(dsns[0])
        try:
            await ensure_days(conn, [day_of_hour(victim.hour)])
            await conn.execute("INSERT INTO reactions (ts, hour, username, event, idem_key) VALUES ($1, $2, $3, 1, $4)",
                               victim.ts, victim.hour, victim.user, load.plan.prefix + "nobody")
        finally:
            await conn.close()
        tampered["lost"], tampered["hour"] = victim.key, str(victim.hour)
        return []

    outcome = await run_scenario(cluster, "tampered", tamper, LoadPlan(base_url(cluster), "", max_events=600),
                                 warmup_acks=100)
    report = outcome.report
    assert [k.split()[0] for k in report.lost] == [tampered["lost"]]
    assert len(report.garbled) == 1 and "nobody" in report.garbled[0]
    # The shards' rows no longer match the record, nor the answers (the counters still hold the event).
    assert report.wrong and all(w.startswith(f"hour {tampered['hour']}") for w in report.wrong), report.wrong
    print(*report.wrong, sep="\n")
