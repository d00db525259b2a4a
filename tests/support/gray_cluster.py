"""A local cluster with room for gray failures: one shard's database on a host of its own, one behind a relay.

Shard a's PostgreSQL listens on loopback but is reached through a relay
(tests/support/relay.py) that can turn the link slow, cut its connections or
hold a commit and deliver it late; nginx reaches shard b's writer through a
relay too (``writer_relay``, which can hold a request and deliver it late);
shard c's runs on a host of its own (a network namespace, tests/support/netns.py)
that can be cut off without a reset; shard b is as ``make run`` makes it.
Writers, aggregators and nginx run on loopback as usual, started by the
cluster's own code; only where the shards' databases live differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from sharding.config import Shard, Topology
from sharding.local.cluster import LocalCluster
from sharding.local.postgres import LocalPostgres
from sharding.local.settings import ClusterSettings
from tests.support.cluster import TEST_ENV, free_base_port
from tests.support.netns import Host, HostNetwork
from tests.support.passwords import session_passfile
from tests.support.postmaster import HOST_PG_PORT, postgres_in
from tests.support.relay import Relay
from tests.support.tmpdirs import world_traversable_tmpdir

RELAYED = "a"
HOSTED = "c"
WRITER_RELAYED = "b"
# The relay of shard a listens this far above the shard's own PostgreSQL port,
# and that of shard b's writer this far above the writer's port.
RELAY_PORT_OFFSET = 50


class GrayCluster(LocalCluster):
    # The shards the gray faults act on: a fault that retires a shard picks another.
    kept_shards = frozenset({"a", "b", "c"})

    def __init__(self, settings: ClusterSettings, host: Host) -> None:
        super().__init__(settings)
        self.db_host = host
        self.relay: Relay | None = None
        self.writer_relay: Relay | None = None

    def new_shard(self, index: int, used: set[int]) -> Shard:
        shard = super().new_shard(index, used)
        port = shard.dsn.rsplit(":", 1)[1].split("/", 1)[0]
        if shard.name == HOSTED:
            return replace(shard, dsn=shard.dsn.replace(f"127.0.0.1:{port}", f"{self.db_host.address}:{HOST_PG_PORT}"))
        if shard.name == RELAYED:
            return replace(shard, dsn=shard.dsn.replace(f":{port}/", f":{int(port) + RELAY_PORT_OFFSET}/"))
        return shard

    def postgres(self, shard: Shard) -> LocalPostgres:
        if shard.name == HOSTED:
            return postgres_in(self.db_host, self.root / "pg" / shard.name)
        pg = super().postgres(shard)
        if shard.name == RELAYED:
            return replace(pg, port=pg.port - RELAY_PORT_OFFSET)
        return pg

    def start_postgres(self, shard: Shard) -> LocalPostgres:
        pg = super().start_postgres(shard)
        if shard.name == RELAYED and self.relay is None:
            self.relay = Relay(("127.0.0.1", pg.port), delay_ms=SLOW_LINK_MS,
                               listen=("127.0.0.1", pg.port + RELAY_PORT_OFFSET)).start()
            self.relay.switch_delay()  # fast until a test makes it slow
        return pg

    def write_nginx_conf(self, topology: Topology) -> str:
        """nginx reaches shard b's writer through ``writer_relay`` (started with the first configuration)."""
        return super().write_nginx_conf(self.nginx_topology(topology))

    def nginx_topology(self, topology: Topology) -> Topology:
        """``topology`` as nginx is given it: shard b's first writer is its relay's address."""
        shards = []
        for shard in topology.shards:
            if shard.name == WRITER_RELAYED and shard.writers:
                host, port = shard.writers[0].rsplit(":", 1)
                listen = (host, int(port) + RELAY_PORT_OFFSET)
                if self.writer_relay is None:
                    self.writer_relay = Relay((host, int(port)), listen=listen).start()
                shard = replace(shard, writers=("{}:{}".format(*listen), *shard.writers[1:]))
            shards.append(shard)
        return replace(topology, shards=tuple(shards))

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            for relay in (self.relay, self.writer_relay):
                if relay is not None:
                    relay.stop()
            self.relay = self.writer_relay = None


# The slow link: 100 ms each way, a round trip 200 ms longer (this kernel has no netem).
SLOW_LINK_MS = 100.0


@contextmanager
def gray_cluster(settings: ClusterSettings | None = None) -> Iterator[GrayCluster]:
    """A started GrayCluster on a network of its own (3 shards, 2 aggregators unless ``settings`` say otherwise);
    every process, namespace and link it made is gone at the end."""
    settings = settings or ClusterSettings(port=free_base_port(), shards=3, aggregators=2,
                                           data_dir=world_traversable_tmpdir("reactions-gray-") / "data",
                                           service_env=TEST_ENV, passfile=session_passfile())
    with HostNetwork() as network:
        host = network.add_host()
        cluster = GrayCluster(settings, host)
        cluster.acquire_run_lock()
        try:
            cluster.start()
            yield cluster
        finally:
            host.heal()
            cluster.stop()
            cluster.release_run_lock()
