"""Gray failures under the audit load, on a cluster with a database on a host of its own and one behind a relay.

Each test runs the audit load through nginx, injects one gray failure and
its end (tests/faults/gray.py checks the promises while it lasts), lets the
load go on, stops it and audits every touched hour: everything acknowledged
is counted, nothing refused is stored, no unmarked answer is beyond the
staleness bound, and the slowest answer stays within the answer bound.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.settings import SETTLE_BOUND_S
from tests.faults.audit import assert_clean
from tests.faults.faults import heal
from tests.faults.gray import ANSWER_BOUND_S, GRAY_FAULTS, MARGIN_S
from tests.faults.scenario import run_scenario
from tests.faults.settle import POLL_S
from tests.support.gray_cluster import GrayCluster, gray_cluster
from tests.support.netns import require_netns

# A PostgreSQL frozen between a commit's guard and its visibility may make it visible late (README, Writer).
FROZEN_DATABASE = "PostgreSQL frozen"


@pytest.fixture(scope="module")
def cluster() -> Iterator[GrayCluster]:
    require_netns()
    with gray_cluster() as made:
        yield made


@pytest.mark.parametrize("name", list(GRAY_FAULTS))
async def test_gray_failure_under_load(cluster: GrayCluster, name: str) -> None:
    heal(cluster)
    outcome = await run_scenario(cluster, name, GRAY_FAULTS[name])
    report = outcome.report
    print(f"\n{report.line()}\n  notes: {outcome.notes}\n  posts: {dict(report.posts)}\n  reads: {dict(report.reads)}"
          f"\n  slowest: {report.slowest}\n  settle: {outcome.settle.line()}")
    assert outcome.fault_error is None, outcome.fault_error
    assert_clean(report)
    assert report.acknowledged > 0 and report.counted >= report.acknowledged
    assert report.slowest_s <= ANSWER_BOUND_S + MARGIN_S, f"an answer took {report.slowest_s:.2f}s: {report.slowest}"
    if name != FROZEN_DATABASE:  # the stated exception: a commit paused after its guard's check (README, Writer)
        assert outcome.settle.settled_s <= SETTLE_BOUND_S + POLL_S, outcome.settle.line()
