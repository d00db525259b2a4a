"""End to end through the real nginx, writers, aggregators and one PostgreSQL per shard."""

from __future__ import annotations

import asyncio
import os
from urllib.parse import quote

import aiohttp

from common.hours import MS_PER_HOUR, now_ms
from sharding import nginx
from sharding.local.cluster import LocalCluster
from sharding.local.processes import alive, stop, wait_ready
from sharding.ring import Ring
from tests.support.cluster import (
    DEADLINE_S,
    base_url,
    counts,
    own_past_hour_ts,
    post,
    shard_event_count,
    sharding_cli,
    shards_holding,
    topology,
    unique_users,
    wait_counts,
)


def ring_of(cluster: LocalCluster) -> tuple[Ring, dict[str, str]]:
    """nginx's ring over the active writers, and which shard each writer writes to."""
    current = topology(cluster)
    owner = {w: s.name for s in current.active_shards for w in s.writers}
    return Ring.build(nginx.writer_addresses(current)), owner


async def test_all_three_post_forms_and_get(cluster: LocalCluster) -> None:
    base, ts = base_url(cluster), own_past_hour_ts()
    users = unique_users(3, "forms")
    async with aiohttp.ClientSession() as session:
        assert await counts(session, base, ts) == (0, 0, 0)
        assert await post(session, f"{base}/analytics?timestamp={ts}&user={users[0]}&event=click") == 204
        assert await post(session, f"{base}/analytics?timestamp={ts}&user={users[1]}&impression") == 204
        assert await post(session, f"{base}/analytics/{ts}/{users[2]}/click") == 204
        assert await post(session, f"{base}/analytics/{ts}/{users[0]}/impression") == 204
        await wait_counts(session, base, ts, (3, 2, 2))
        async with session.get(f"{base}/analytics?timestamp={ts}") as resp:
            assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert await resp.text() == "unique_users,3\nclicks,2\nimpressions,2\n"
        assert await post(session, f"{base}/analytics?timestamp={ts}&user={users[0]}&event=like") == 400
        async with session.get(f"{base}/analytics?timestamp=soon") as resp:
            assert resp.status == 400
        async with session.put(f"{base}/analytics") as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD, POST"
        async with session.get(f"{base}/nowhere") as resp:
            assert resp.status == 404
        await wait_counts(session, base, ts, (3, 2, 2))


async def test_routing_matches_the_python_ring(cluster: LocalCluster) -> None:
    base, ts = base_url(cluster), own_past_hour_ts()
    ring, owner = ring_of(cluster)
    users = unique_users(60, "route") + [f"route {i}/é+%" for i in range(20)]
    async with aiohttp.ClientSession() as session:
        for i, user in enumerate(users):
            raw = quote(user, safe="")
            url = f"{base}/analytics?timestamp={ts}&user={raw}&click" if i % 2 else f"{base}/analytics/{ts}/{raw}/click"
            assert await post(session, url) == 204
    holding = await shards_holding(cluster, users)
    predicted = {u: {owner[ring.lookup(quote(u, safe=""))]} for u in users}
    assert holding == predicted
    assert len({s for names in holding.values() for s in names}) == len(owner), "every shard got some users"


async def test_the_series_through_nginx_is_the_one_hour_answers(cluster: LocalCluster) -> None:
    base, ts = base_url(cluster), own_past_hour_ts()
    first = ts // MS_PER_HOUR - 1
    async with aiohttp.ClientSession() as session:
        for k, user in enumerate(unique_users(3, "series")):
            assert await post(session, f"{base}/analytics/{ts + k * MS_PER_HOUR}/{user}/click") == 204
        await wait_counts(session, base, ts + 2 * MS_PER_HOUR, (1, 1, 0))
        expected = ["hour_start_ms,unique_users,clicks,impressions"]
        for hour in range(first, first + 5):
            one = await counts(session, base, hour * MS_PER_HOUR)
            assert one is not None
            expected.append(",".join(map(str, (hour * MS_PER_HOUR, *one))))
        async with session.get(f"{base}/analytics/series?from={first * MS_PER_HOUR + 5}&to={ts + 3 * MS_PER_HOUR}") \
                as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "text/csv; charset=utf-8"
            assert (await resp.text()).splitlines() == expected
        assert expected[1].endswith(",0,0,0") and expected[2].endswith(",1,1,0")
        async with session.get(f"{base}/analytics/series?from={ts}") as resp:
            assert resp.status == 400 and await resp.text() == "to is required: milliseconds since the epoch\n"


# Usernames that str.isprintable() refused, and pairs that differ only by an
# invisible character: each is its own user (docs/contract.md).
UNUSUAL_NAMES = ["👨\u200d👩\u200d👧", "🏳️\u200d🌈", "🏳️🌈", "no\u00a0break", "no break", "soft\u00adhyphen",
                 "softhyphen", "\U0001fae8", "a+b", "a b", "%41", "A"]


async def test_unusual_usernames_are_distinct_users_through_nginx(cluster: LocalCluster) -> None:
    base, ts = base_url(cluster), own_past_hour_ts()
    tag = unique_users(1, "names")[0]
    users = [f"{tag}{name}" for name in UNUSUAL_NAMES]
    async with aiohttp.ClientSession() as session:
        for user in users:
            raw = quote(user, safe="")
            assert await post(session, f"{base}/analytics/{ts}/{raw}/click") == 204, user
            assert await post(session, f"{base}/analytics?timestamp={ts}&user={raw}&impression") == 204, user
            assert await post(session, f"{base}/analytics?timestamp={ts}&user={raw}&event=click") == 204, user
        await wait_counts(session, base, ts, (len(users), 2 * len(users), len(users)))
    holding = await shards_holding(cluster, users)
    assert all(len(holding[u]) == 1 for u in users), f"each stored verbatim, on one shard: {holding}"


async def test_a_shard_added_mid_hour_keeps_unique_users_exact(cluster: LocalCluster) -> None:
    base, ts = base_url(cluster), now_ms()
    before, after = unique_users(40, "before"), unique_users(40, "after")
    async with aiohttp.ClientSession() as session:
        start = await counts(session, base, ts)
        assert start is not None
        for user in before:
            assert await post(session, f"{base}/analytics?timestamp={ts}&user={user}&click") == 204
        expected = (start[0] + 40, start[1] + 40, start[2])
        await wait_counts(session, base, ts, expected)

        result = await sharding_cli(cluster, "add-shard")
        assert result.returncode == 0, result.stderr
        assert "added" in result.stdout
        new_shard = topology(cluster).shards[-1]
        assert f'"{new_shard.writers[0]}"' in cluster.prometheus_conf.read_text(), "Prometheus scrapes the new writer"
        ring, owner = ring_of(cluster)
        moved = [u for u in before if owner[ring.lookup(u)] == new_shard.name]
        assert moved, "some earlier users now hash to the new shard"

        # The earlier users again (some now land on the new shard) and new ones.
        for user in before + after:
            assert await post(session, f"{base}/analytics/{ts}/{user}/impression") == 204
        await wait_counts(session, base, ts, (expected[0] + 40, expected[1], expected[2] + 80))
    holding = await shards_holding(cluster, moved + after)
    assert all(new_shard.name in holding[u] for u in moved), "moved users wrote to the new shard"
    assert {u for u in after if holding[u] == {new_shard.name}} == {u for u in after
                                                                   if owner[ring.lookup(u)] == new_shard.name}
    assert sum(len(names) > 1 for names in holding.values()) == len(moved), "a moved user is on two shards, once"


async def test_a_retired_shard_takes_no_writes_and_its_counts_still_appear(cluster: LocalCluster) -> None:
    base, ts = base_url(cluster), own_past_hour_ts()
    first, second = unique_users(60, "pre"), unique_users(60, "post")
    victim = topology(cluster).active_shards[0]
    async with aiohttp.ClientSession() as session:
        for user in first:
            assert await post(session, f"{base}/analytics?timestamp={ts}&user={user}&click") == 204
        await wait_counts(session, base, ts, (60, 60, 0))
        on_victim = [u for u, names in (await shards_holding(cluster, first)).items() if victim.name in names]
        assert on_victim, "the retired shard held some of the users"

        result = await sharding_cli(cluster, "retire-shard", victim.name)
        assert result.returncode == 0, result.stderr
        assert topology(cluster).shard(victim.name).state == "retired"
        assert victim.writers[0] not in (cluster.nginx_conf).read_text()
        assert not [r for r in cluster.registry.all("writer") if r.shard == victim.name]
        events_then = await shard_event_count(victim.dsn)

        for user in first + second:
            assert await post(session, f"{base}/analytics?timestamp={ts}&user={user}&impression") == 204
        await wait_counts(session, base, ts, (120, 60, 120))
    assert await shard_event_count(victim.dsn) == events_then, "no write reached the retired shard"
    holding = await shards_holding(cluster, second)
    assert all(victim.name not in names for names in holding.values())


async def test_writer_failover_counts_every_204(cluster: LocalCluster) -> None:
    base, ts = base_url(cluster), own_past_hour_ts()
    ring, owner = ring_of(cluster)
    record = next(r for r in cluster.registry.all("writer") if r.address in owner)
    users = unique_users(120, "failover")
    theirs = [u for u in users if ring.lookup(u) == record.address]
    assert theirs, "some users hash to the writer that is stopped"
    try:
        assert stop(record), "the writer stopped on SIGTERM"
        assert not alive(record)
        acknowledged = 0
        async with aiohttp.ClientSession() as session:
            for user in users:
                status = await post(session, f"{base}/analytics?timestamp={ts}&user={user}&click")
                assert status == 204, f"{user}: {status}"
                acknowledged += 1
            await wait_counts(session, base, ts, (acknowledged, acknowledged, 0))
        holding = await shards_holding(cluster, theirs)
        expected = {u: {owner[ring.lookup(u, down={record.address})]} for u in theirs}
        assert holding == expected, "a stopped writer's users go to the next writer on the ring"
    finally:
        await restart_writer(cluster, record.shard or "")


async def restart_writer(cluster: LocalCluster, shard_name: str) -> None:
    """Put the stopped writer back and wait until nginx routes to it again (its fail_timeout passes)."""
    for record in cluster.registry.all("writer"):
        if record.shard == shard_name and not alive(record):
            cluster.registry.remove(record.name)
    shard = topology(cluster).shard(shard_name)
    for record in cluster.start_writers(shard):
        wait_ready(record)
    ring, owner = ring_of(cluster)
    probe_ts = own_past_hour_ts()
    probes = [u for u in unique_users(400, "probe") if owner[ring.lookup(u)] == shard_name]
    async with aiohttp.ClientSession() as session:

        async def routed_back() -> bool:
            user = probes.pop()
            await post(session, f"{base_url(cluster)}/analytics?timestamp={probe_ts}&user={user}&click")
            return shard_name in (await shards_holding(cluster, [user]))[user]

        deadline = asyncio.get_running_loop().time() + DEADLINE_S
        while not await routed_back():
            assert asyncio.get_running_loop().time() < deadline, "nginx did not route to the restarted writer"
            await asyncio.sleep(0.2)


async def test_an_added_aggregator_serves_reads(cluster: LocalCluster) -> None:
    base, ts = base_url(cluster), own_past_hour_ts()
    async with aiohttp.ClientSession() as session:
        for user in unique_users(30, "agg"):
            assert await post(session, f"{base}/analytics/{ts}/{user}/click") == 204
        expected = await counts(session, base, ts)
        assert expected is not None
        before = topology(cluster).aggregators

        result = await sharding_cli(cluster, "add-aggregator")
        assert result.returncode == 0, result.stderr
        added = [a for a in topology(cluster).aggregators if a not in before]
        assert len(added) == 1
        assert f"server {added[0]}" in cluster.nginx_conf.read_text()
        assert await counts(session, f"http://{added[0]}", ts) == expected


async def test_status_shows_every_part(cluster: LocalCluster) -> None:
    result = await sharding_cli(cluster, "status")
    assert result.returncode == 0, result.stderr
    assert f"running (run pid {os.getpid()})" in result.stdout
    for shard in topology(cluster).shards:
        assert f"postgres-{shard.name}" in result.stdout
    assert "aggregator-1" in result.stdout and "nginx" in result.stdout
    assert "not running" not in result.stdout.split("\n", 1)[1]
