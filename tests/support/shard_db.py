"""Shard databases for tests: migrated and emptied."""

from __future__ import annotations

import asyncpg

from common import partitions
from common.schema import migrate


async def reset_database(dsn: str) -> None:
    """Migrate and empty a shard database, as a new one is: no rows, and no day partitions of the raw log.

    Partitions left by an earlier test would be pruned or verified by the next one.
    """
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        for day in sorted(await partitions.existing_days(conn)):
            await conn.execute(f"DROP TABLE {partitions.partition_name(day)}")
        await conn.execute("TRUNCATE reactions, hour_counts, hour_users, raw_pruned, batch_parts")
    finally:
        await conn.close()


async def fetchval(dsn: str, sql: str, *args: object) -> object:
    """One value from a shard database, on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()
