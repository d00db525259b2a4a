"""The raw log's retention and the rollups' check on a running cluster, through `python -m sharding`."""

from __future__ import annotations

import aiohttp
import asyncpg

from common import partitions
from common.hours import MS_PER_HOUR, hour_of, now_ms
from sharding.local.cluster import LocalCluster
from tests.support.cluster import base_url, post, sharding_cli, topology, unique_users, wait_counts
from tests.support.shard_db import fetchval

DAY_MS = 24 * MS_PER_HOUR
# Damage an hour of one shard so that every GET shows it: a user who never
# reacted (above the version aggregators hold) and five clicks too many.
DAMAGE = """
UPDATE hour_counts SET clicks = clicks + 5, version = version + 1 WHERE hour = $1;
INSERT INTO hour_users (hour, username, version) SELECT $1, 'ghost', version FROM hour_counts WHERE hour = $1;
"""


async def damage(dsn: str, hour: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(DAMAGE.replace("$1", str(hour)))
    finally:
        await conn.close()


async def test_prune_then_verify_and_repair_a_damaged_hour(cluster: LocalCluster) -> None:
    base, now = base_url(cluster), now_ms()
    old_ts, recent_ts = now - 40 * DAY_MS, now - 2 * DAY_MS
    users = unique_users(40, "life")
    async with aiohttp.ClientSession() as session:
        for user in users:
            assert await post(session, f"{base}/analytics/{old_ts}/{user}/click") == 204
            assert await post(session, f"{base}/analytics/{recent_ts}/{user}/impression") == 204
        await wait_counts(session, base, old_ts, (40, 40, 0))
        await wait_counts(session, base, recent_ts, (40, 0, 40))

        pruned = await sharding_cli(cluster, "prune")
        assert pruned.returncode == 0, pruned.stderr
        old_partition = partitions.partition_name(partitions.day_of_hour(hour_of(old_ts)))
        assert f"dropped {old_partition}" in pruned.stdout, pruned.stdout
        assert partitions.partition_name(partitions.day_of_hour(hour_of(recent_ts))) not in pruned.stdout
        for shard in topology(cluster).shards:
            assert await fetchval(shard.dsn, "SELECT count(*) FROM reactions WHERE hour = $1", hour_of(old_ts)) == 0
        await wait_counts(session, base, old_ts, (40, 40, 0))  # rollups are never expired
        await wait_counts(session, base, recent_ts, (40, 0, 40))

        shard = topology(cluster).shards[0]
        clean = await sharding_cli(cluster, "verify-shard", shard.name)
        assert clean.returncode == 0 and "0 mismatch(es)" in clean.stdout, clean.stdout + clean.stderr
        for ts in (recent_ts, old_ts):
            await damage(shard.dsn, hour_of(ts))
        await wait_counts(session, base, recent_ts, (41, 5, 40))

        found = await sharding_cli(cluster, "verify-shard", shard.name)
        assert found.returncode == 1, found.stdout + found.stderr
        assert f"mismatch: hour {hour_of(recent_ts)}" in found.stdout and "ghost" in found.stdout
        assert f"hour {hour_of(old_ts)}" not in found.stdout  # pruned: not covered, not checked
        assert "1 not covered" in found.stdout

        repaired = await sharding_cli(cluster, "verify-shard", shard.name, "--repair")
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert f"repaired hour {hour_of(recent_ts)}" in repaired.stdout
        await wait_counts(session, base, recent_ts, (40, 0, 40))
        # The damage to the pruned hour stays: nothing can rebuild it.
        await wait_counts(session, base, old_ts, (41, 45, 0))
