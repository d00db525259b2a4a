"""Fixtures of the dashboard's browser tests: a cluster and a headless Chromium (helpers: tests/support)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium import webdriver

from sharding.local.cluster import LocalCluster
from tests.support.browser import headless_chromium
from tests.support.cluster import start_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Three shards and two aggregators behind nginx, shared by the module's tests."""
    yield from start_cluster(shards=3, aggregators=2)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Remote]:
    """One headless Chromium at a laptop's window size for the module; stopped by PID at the end."""
    with headless_chromium() as driver:
        yield driver
