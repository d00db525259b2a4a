"""One real cluster for the fault and hostile-input tests (tests/e2e's, started the same way)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
from hypothesis import settings

from common.hours import MS_PER_HOUR, now_ms
from sharding.local.cluster import LocalCluster
from tests.faults.faults import heal
from tests.support.cluster import start_cluster

# Property tests send real requests through nginx: few examples, no per-example deadline.
settings.register_profile("reactions", max_examples=40, deadline=None, derandomize=False)
settings.load_profile("reactions")


@pytest.fixture(scope="session")
def faults_cluster() -> Iterator[LocalCluster]:
    """Three shards and two aggregators, shared by these tests; each test uses users of its own."""
    yield from start_cluster(shards=3, aggregators=2)


@pytest.fixture
async def cluster(faults_cluster: LocalCluster) -> LocalCluster:
    """The shared cluster with every part running (a test before may have stopped some)."""
    await asyncio.to_thread(heal, faults_cluster)
    return faults_cluster


@pytest.fixture(scope="module")
def healthy(faults_cluster: LocalCluster) -> None:
    """Every part running (a fault test before may have stopped some)."""
    heal(faults_cluster)


@pytest.fixture(scope="module")
def hour() -> int:
    """A past hour of one module alone: whatever the shards hold in it came from there."""
    return now_ms() // MS_PER_HOUR - random.randrange(100_000, 200_000)  # not before 2000 (refused)
