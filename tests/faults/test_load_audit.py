"""The audit harness on a healthy cluster: exact, and it notices what it must."""

from __future__ import annotations

from sharding.cluster import LocalCluster
from tests.faults.audit import assert_clean
from tests.faults.load import LoadPlan
from tests.faults.scenario import base_url, run_scenario


async def test_a_healthy_cluster_counts_every_acknowledged_event_exactly(cluster: LocalCluster) -> None:
    outcome = await run_scenario(cluster, "healthy", None, LoadPlan(base_url(cluster), "", max_events=1500))
    print(outcome.report.line(), outcome.report.posts, outcome.report.reads)
    assert_clean(outcome.report)
    assert outcome.report.acknowledged >= 1000
    assert outcome.report.unanswered == outcome.report.refused == 0
    assert outcome.report.counted == outcome.report.acknowledged == outcome.report.stored
