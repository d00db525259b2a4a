"""All SQL of the aggregator: small reads, one statement (one snapshot) each.

Every read also returns the shard database's identity (``reactions_identity()``,
common/schema.py), from the same connection and the same statement as the
data: so a database replaced behind the same DSN can never have its rows
merged into what was read from the one before it (README, Invariants 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

IDENTITY_COLUMNS = "i.system_identifier, i.database_oid, i.timeline, i.shard_uuid"

# The users of an hour first seen above a version, with the hour's counters
# and version, in ONE statement so that all of it comes from the same snapshot.
# A batch holds the hour_counts row lock until it commits, so for one hour
# versions become visible in order: "above v" never skips a late commit.
HOUR_SINCE = f"""
SELECT {IDENTITY_COLUMNS}, c.clicks, c.impressions, c.version,
       ARRAY(SELECT u.username FROM hour_users u WHERE u.hour = $1 AND u.version > $2 AND c.hour IS NOT NULL),
       c.epoch
FROM reactions_identity() i LEFT JOIN hour_counts c ON c.hour = $1
"""

# The whole hour (a cold read of a past or future hour).
HOUR_ALL = f"""
SELECT {IDENTITY_COLUMNS}, c.clicks, c.impressions, c.version,
       ARRAY(SELECT u.username FROM hour_users u WHERE u.hour = $1 AND c.hour IS NOT NULL),
       c.epoch
FROM reactions_identity() i LEFT JOIN hour_counts c ON c.hour = $1
"""

HOUR_VERSIONS = f"""
SELECT {IDENTITY_COLUMNS},
       ARRAY(SELECT c.hour FROM hour_counts c WHERE c.hour = ANY($1::bigint[]) ORDER BY c.hour),
       ARRAY(SELECT c.version FROM hour_counts c WHERE c.hour = ANY($1::bigint[]) ORDER BY c.hour),
       ARRAY(SELECT c.epoch FROM hour_counts c WHERE c.hour = ANY($1::bigint[]) ORDER BY c.hour)
FROM reactions_identity() i
"""

IDENTITY = f"SELECT {IDENTITY_COLUMNS} FROM reactions_identity() i"


@dataclass(frozen=True, slots=True)
class ShardIdentity:
    """What changes when the database behind a DSN is replaced (common/schema.py)."""

    system_identifier: int
    database_oid: int
    timeline: int
    shard_uuid: str

    @property
    def database(self) -> tuple[int, int]:
        """Two shards with the same one are the same database: it must never be summed twice."""
        return (self.system_identifier, self.database_oid)

    def to_json(self) -> dict[str, object]:
        return {"system_identifier": str(self.system_identifier), "database_oid": self.database_oid,
                "timeline": self.timeline, "shard_uuid": self.shard_uuid}


@dataclass(frozen=True, slots=True)
class Stamp:
    """Which database an answer came from, and the hour's version and epoch there."""

    identity: ShardIdentity
    version: int
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class ShardHour:
    """One shard's view of one hour: its counters, its version and (new) users."""

    identity: ShardIdentity
    clicks: int
    impressions: int
    version: int
    users: list[str]
    # Bumped when a repair rewrote the hour (common/rollups.py): users may have
    # been removed, which no "users above version v" read can show.
    epoch: int = 0

    @property
    def stamp(self) -> Stamp:
        return Stamp(self.identity, self.version, self.epoch)


EMPTY_VERSION = 0


def _identity(row: asyncpg.Record) -> ShardIdentity:
    return ShardIdentity(row[0], row[1], row[2], str(row[3]))


def _shard_hour(row: asyncpg.Record) -> ShardHour:
    identity = _identity(row)
    if row[6] is None:  # no batch has touched the hour on this shard
        return ShardHour(identity, 0, 0, EMPTY_VERSION, [])
    return ShardHour(identity, row[4], row[5], row[6], row[7], row[8])


async def fetch_hour_since(conn: asyncpg.Connection, hour: int, version: int) -> ShardHour:
    """Counters and version of ``hour``, and the users first seen above ``version``."""
    return _shard_hour(await conn.fetchrow(HOUR_SINCE, hour, version))


async def fetch_hour(conn: asyncpg.Connection, hour: int) -> ShardHour:
    """Counters, version and every user of ``hour``."""
    return _shard_hour(await conn.fetchrow(HOUR_ALL, hour))


@dataclass(frozen=True, slots=True)
class HourStamps:
    """One shard's identity and the current version and epoch of some hours (EMPTY_VERSION, 0: no row)."""

    identity: ShardIdentity
    versions: dict[int, tuple[int, int]]

    def stamp(self, hour: int) -> Stamp:
        version, epoch = self.versions.get(hour, (EMPTY_VERSION, 0))
        return Stamp(self.identity, version, epoch)


async def fetch_stamps(conn: asyncpg.Connection, hours: Sequence[int]) -> HourStamps:
    row = await conn.fetchrow(HOUR_VERSIONS, list(hours))
    return HourStamps(_identity(row), {h: (v, e) for h, v, e in zip(row[4], row[5], row[6], strict=True)})


async def fetch_identity(conn: asyncpg.Connection) -> ShardIdentity:
    """The identity alone: the readiness probe."""
    return _identity(await conn.fetchrow(IDENTITY))
