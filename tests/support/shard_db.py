"""Shard databases for tests: migrated and emptied."""

from __future__ import annotations

import asyncpg

from common.schema import migrate


async def reset_database(dsn: str) -> None:
    """Migrate and empty a shard database."""
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        await conn.execute("TRUNCATE reactions, hour_counts, hour_users, raw_pruned")
    finally:
        await conn.close()
