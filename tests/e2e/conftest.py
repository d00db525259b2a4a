"""Fixtures of the end-to-end tests; the helpers they use are in tests/support/cluster.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sharding.local.cluster import LocalCluster

# tests/faults/conftest.py imports start_cluster from here (it predates tests/support): keep the name.
from tests.support.cluster import start_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Three shards and two aggregators, shared by a module's tests (each uses its own users)."""
    yield from start_cluster(shards=3, aggregators=2)
