"""Fixtures of the multi-host tests; the hosts themselves are built by tests/support/hosts.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.hosts import Hosts, several_hosts
from tests.support.netns import netns_unavailable


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    """An entry host, two aggregator hosts and three shard hosts, shared by the module's tests."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with several_hosts() as built:
        yield built
