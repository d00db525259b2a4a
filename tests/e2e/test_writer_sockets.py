"""``make run WRITER_SOCKETS=1``: nginx reaches the writers over Unix sockets.

Counts stay exact, and a batch's events land where single POSTs of their users do.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from sharding.local.cluster import LocalCluster
from sharding.placement import Placement, placement_key
from sharding.sockets import socket_path
from tests.e2e.test_batch import csv_line, post_batch
from tests.support.cluster import (
    base_url,
    own_past_hour_ts,
    post,
    shards_holding,
    start_cluster,
    topology,
    unique_users,
    wait_counts,
)
from tests.waiting import wait_until


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from start_cluster(shards=3, aggregators=1, writer_sockets=True)


def placed(cluster: LocalCluster, users: list[str], sockets: str) -> dict[str, set[str]]:
    """The shard each user's single POST lands on, by the ring of ``sockets``' names (or of addresses: "")."""
    placement = Placement.of(topology(cluster), sockets)
    return {u: {placement.shard_of[placement.writer(u)].name} for u in users}


async def test_nginx_names_the_writers_sockets_and_counts_are_exact(cluster: LocalCluster) -> None:
    sockets = cluster.writer_sockets()
    assert sockets == str(cluster.sockets_dir)
    conf = cluster.nginx_conf.read_text()
    for address in [w for s in topology(cluster).active_shards for w in s.writers]:
        path = socket_path(sockets, address)
        assert f"server unix:{path} max_fails=1" in conf and f"server {address} " not in conf
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    base, ts = base_url(cluster), own_past_hour_ts()
    users = unique_users(60, "sock")
    assert placed(cluster, users, sockets) != placed(cluster, users, ""), "the test could not tell the rings apart"
    async with aiohttp.ClientSession() as session:
        for i, user in enumerate(users):
            assert await post(session, f"{base}/analytics?timestamp={ts}&user={user}&event=click") == 204
            if i % 3 == 0:
                assert await post(session, f"{base}/analytics/{ts}/{user}/impression") == 204
        await wait_counts(session, base, ts, (len(users), len(users), 20))
    assert await shards_holding(cluster, users) == placed(cluster, users, sockets)
    access_log = Path(cluster.nginx_dir) / "access.log"
    await wait_until(lambda: access_log.exists() and f"upstream=unix:{sockets}/" in access_log.read_text(),
                     "nginx to log a writer's socket")


async def test_a_batch_lands_where_single_posts_over_sockets_do(cluster: LocalCluster) -> None:
    base, ts_batch, ts_single = base_url(cluster), own_past_hour_ts(), own_past_hour_ts()
    users = unique_users(40, "sockbatch") + [f"{uuid.uuid4().hex[:6]}{name}" for name in ("a b", "é", "100%")]
    async with aiohttp.ClientSession() as session:
        for user in users:
            assert await post(session, f"{base}/analytics?timestamp={ts_single}&user={placement_key(user)}"
                                       f"&event=click") == 204
        await wait_counts(session, base, ts_single, (len(users), len(users), 0))
        singles = await shards_holding(cluster, users)
        body = "timestamp,user,event\n" + "".join(csv_line(ts_batch, u, "impression") for u in users)
        status, text, _ = await post_batch(session, base, body, f"k-{uuid.uuid4()}", strict=True)
        assert (status, text) == (200, f"events,{len(users)}\nstored,{len(users)}\nalready_present,0\n")
        await wait_counts(session, base, ts_batch, (len(users), 0, len(users)))
    assert await shards_holding(cluster, users) == singles == placed(cluster, users, cluster.writer_sockets())
    assert len({s for shards in singles.values() for s in shards}) == 3, "spread over every shard"
