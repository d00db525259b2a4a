"""Hosts for the gray-failure tests: a private network, and a PostgreSQL in a host of its own."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from sharding.local.postgres import LocalPostgres
from tests.support.netns import Host, HostNetwork, require_netns
from tests.support.postmaster import postgres_in
from tests.support.tmpdirs import world_traversable_tmpdir


@pytest.fixture(scope="module")
def network() -> Iterator[HostNetwork]:
    """A bridge of its own for the module's hosts; every namespace and veth goes at the end."""
    require_netns()
    with HostNetwork() as made:
        yield made


@pytest.fixture(scope="module")
def db_host(network: HostNetwork) -> Host:
    return network.add_host()


@pytest.fixture(scope="module")
def host_postgres(db_host: Host) -> Iterator[LocalPostgres]:
    """A PostgreSQL inside ``db_host``, reachable only at the host's address; stopped before the host goes."""
    root = world_traversable_tmpdir("reactions-gray-pg-")
    server = postgres_in(db_host, root / "pg")
    try:
        server.start()
        yield server
    finally:
        db_host.heal()
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
