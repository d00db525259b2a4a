"""Every part started before what it needs, on hosts of their own: the entry host first, then an aggregator,
then the shard's PostgreSQL, then its writer. Each waits, says what for, and the cluster comes up by itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import aiohttp

from sharding.config import Topology, save
from tests.support.cluster import own_past_hour_ts, post, wait_counts
from tests.support.hosts import START_DEADLINE_S, Hosts, Part
from tests.support.netns import HostNetwork, require_netns
from tests.support.tmpdirs import world_traversable_tmpdir
from tests.waiting import wait_until

# The entry host pauses at most 5 s between two tries; PostgreSQL's initdb runs meanwhile.
WAIT_DEADLINE_S = 60.0


@contextlib.contextmanager
def hosts_not_started() -> Iterator[Hosts]:
    """An entry host and an aggregator host, nothing started; everything stopped and gone at the end."""
    require_netns()
    with HostNetwork() as network:
        hosts = Hosts(network, world_traversable_tmpdir("reactions-order-"), network.add_host(),
                      [network.add_host()])
        try:
            yield hosts
        finally:
            hosts.stop()


def says(part: Part, text: str) -> bool:
    assert part.proc.poll() is None, f"{part.name} exited:\n{part.log.read_text()[-3000:]}"
    return text in part.log.read_text()


async def test_parts_started_in_reverse_order_converge_and_none_exits() -> None:
    with hosts_not_started() as hosts:
        shard = hosts.new_shard_host("a")
        hosts.data_dir.mkdir(parents=True)
        save(Topology(shards=(shard.shard(),), aggregators=tuple(hosts.aggregators)), hosts.data_dir / "shards.json")
        entry = hosts.start_entry(wait=False)
        [aggregator] = hosts.start_aggregators()
        await wait_until(lambda: says(entry, f"waiting for shard a: its database {shard.dsn}"),
                         "the entry host says it waits for the database", WAIT_DEADLINE_S)
        await wait_until(lambda: says(aggregator, "waiting for the shard file at"),
                         "the aggregator says it waits for the entry host's shard file", WAIT_DEADLINE_S)
        await asyncio.to_thread(shard.postgres.start)  # the database, without the schema: no writer yet
        await wait_until(lambda: says(entry, "no Reactions schema yet"),
                         "the entry host waits for the schema (where apply refuses)", WAIT_DEADLINE_S)
        writer = hosts.start_writer(shard)
        await wait_until(lambda: says(entry, "Reactions is up"), "the entry host comes up by itself",
                         WAIT_DEADLINE_S + START_DEADLINE_S)
        ts = own_past_hour_ts()
        async with aiohttp.ClientSession() as session:
            assert await post(session, f"{hosts.base}/analytics?timestamp={ts}&user=alice&event=click") == 204
            await wait_counts(session, hosts.base, ts, (1, 1, 0))
        assert all(part.proc.poll() is None for part in (entry, aggregator, writer)), "nothing exited"
        assert "refused" not in entry.log.read_text()
