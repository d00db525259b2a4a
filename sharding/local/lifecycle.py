"""``prune`` and ``verify-shard``: the raw log's retention and the rollups' check, on the running cluster.

The SQL is in common/partitions.py and common/rollups.py (the writers use
the same code for their own upkeep); this module finds the shards of the
cluster of this PORT and DATA_DIR and prints what was done.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from common import partitions, rollups
from common.hours import current_hour
from sharding.config import Shard, load
from sharding.local.cluster import ClusterError, LocalCluster
from sharding.local.operations import require_running, step

# Connecting to a shard of a running cluster: it answers at once or is down.
CONNECT_TIMEOUT_S = 10.0


async def _connect(shard: Shard, passfile: Path) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(shard.dsn, passfile=str(passfile), timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise ClusterError(f"shard {shard.name}: cannot connect ({type(exc).__name__}: {exc})") from exc


async def _prune_shard(shard: Shard, passfile: Path, today: int, older_than_days: int) -> list[partitions.Pruned]:
    conn = await _connect(shard, passfile)
    try:
        return await partitions.prune(conn, today, older_than_days)
    finally:
        await conn.close()


def prune(cluster: LocalCluster, older_than_days: int) -> int:
    """Drop raw-log days older than ``older_than_days`` on every shard (active and retired); the days dropped."""
    require_running(cluster)
    today = partitions.day_of_hour(current_hour())
    first_kept = partitions.days_to_keep(today, older_than_days)
    step(f"keeping raw events from {partitions.hour_range_text(first_kept)} on; rollups are kept whole")
    total = 0
    for shard in load(cluster.shards_file).shards:
        dropped = asyncio.run(_prune_shard(shard, cluster.passfile, today, older_than_days))
        for day in dropped:
            step(f"shard {shard.name}: dropped {day.name}, {partitions.hour_range_text(day.day)}, "
                 f"{day.bytes:,} bytes")
        if not dropped:
            step(f"shard {shard.name}: nothing older to drop")
        total += len(dropped)
    return total


def find_shard(cluster: LocalCluster, name: str) -> Shard:
    for shard in load(cluster.shards_file).shards:
        if shard.name == name:
            return shard
    raise ClusterError(f"no shard named {name!r} in {cluster.shards_file}")


async def _verify(shard: Shard, passfile: Path, repair: bool) -> bool:
    conn = await _connect(shard, passfile)
    try:
        found = await rollups.verify(conn)
        step(f"shard {shard.name}: {found.covered_hours} hour(s) covered by the raw log checked, "
             f"{found.uncovered_hours} not covered (pruned) skipped; {len(found.differences)} mismatch(es)")
        for diff in found.differences:
            step(f"  mismatch: {diff.describe()}")
        if not repair or not found.differences:
            return not found.differences
        return await _repair(conn, shard, found.differences)
    finally:
        await conn.close()


async def _repair(conn: asyncpg.Connection, shard: Shard, differences: list[rollups.HourDifference]) -> bool:
    for diff in differences:
        await rollups.repair(conn, diff.hour)
        step(f"  repaired hour {diff.hour} from its raw events (one transaction; aggregators re-read it whole)")
    again = await rollups.verify(conn)
    step(f"shard {shard.name}: after the repair, {len(again.differences)} mismatch(es)")
    return not again.differences


def verify_shard(cluster: LocalCluster, name: str, repair: bool) -> bool:
    """Compare a shard's rollups with its raw events (and rebuild mismatched hours); True if they agree."""
    require_running(cluster)
    return asyncio.run(_verify(find_shard(cluster, name), cluster.passfile, repair))
