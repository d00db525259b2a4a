"""Faults while the audit load runs: nothing acknowledged is lost, no wrong number is served.

Each test runs the load, injects one fault and its recovery (tests/faults/faults.py),
lets the load go on, stops it and audits every touched hour (tests/faults/audit.py).
"""

from __future__ import annotations

import pytest

from sharding.local.cluster import LocalCluster
from tests.faults.audit import assert_clean
from tests.faults.faults import FAULTS
from tests.faults.scenario import run_scenario


@pytest.mark.parametrize("name", list(FAULTS))
async def test_fault_under_load_loses_nothing_and_serves_nothing_wrong(cluster: LocalCluster, name: str) -> None:
    outcome = await run_scenario(cluster, name, FAULTS[name])
    report = outcome.report
    print(f"\n{report.line()}\n  notes: {outcome.notes}\n  posts: {dict(report.posts)}\n  reads: {dict(report.reads)}"
          f"\n  settle: {outcome.settle.line()}")
    assert outcome.fault_error is None, outcome.fault_error
    assert_clean(report)
    assert report.acknowledged > 0 and report.counted >= report.acknowledged
