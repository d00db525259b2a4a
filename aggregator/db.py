"""All SQL of the aggregator: small reads, one statement (one snapshot) each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

# The users of an hour first seen above a version, with the hour's counters
# and version, in ONE statement so that all four come from the same snapshot.
# A batch holds the hour_counts row lock until it commits, so for one hour
# versions become visible in order: "above v" never skips a late commit.
HOUR_SINCE = """
SELECT c.clicks, c.impressions, c.version,
       ARRAY(SELECT u.username FROM hour_users u WHERE u.hour = $1 AND u.version > $2)
FROM hour_counts c WHERE c.hour = $1
"""

# The whole hour (a cold read of a past or future hour).
HOUR_ALL = """
SELECT c.clicks, c.impressions, c.version,
       ARRAY(SELECT u.username FROM hour_users u WHERE u.hour = $1)
FROM hour_counts c WHERE c.hour = $1
"""

HOUR_VERSIONS = "SELECT hour, version FROM hour_counts WHERE hour = ANY($1::bigint[])"


@dataclass(frozen=True, slots=True)
class ShardHour:
    """One shard's view of one hour: its counters, its version and (new) users."""

    clicks: int
    impressions: int
    version: int
    users: list[str]


EMPTY_VERSION = 0


def _shard_hour(row: asyncpg.Record | None) -> ShardHour:
    if row is None:  # no batch has touched the hour on this shard
        return ShardHour(0, 0, EMPTY_VERSION, [])
    return ShardHour(row[0], row[1], row[2], row[3])


async def fetch_hour_since(conn: asyncpg.Connection, hour: int, version: int) -> ShardHour:
    """Counters and version of ``hour``, and the users first seen above ``version``."""
    return _shard_hour(await conn.fetchrow(HOUR_SINCE, hour, version))


async def fetch_hour(conn: asyncpg.Connection, hour: int) -> ShardHour:
    """Counters, version and every user of ``hour``."""
    return _shard_hour(await conn.fetchrow(HOUR_ALL, hour))


async def fetch_versions(conn: asyncpg.Connection, hours: Sequence[int]) -> dict[int, int]:
    """The current version of each of ``hours`` that exists on this shard."""
    rows = await conn.fetch(HOUR_VERSIONS, list(hours))
    return {row[0]: row[1] for row in rows}


async def ping(conn: asyncpg.Connection) -> None:
    await conn.fetchval("SELECT 1")
