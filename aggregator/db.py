"""All SQL of the aggregator: small reads, one statement (one snapshot) each.

Every read also returns the shard database's identity (``reactions_identity()``,
common/schema.py), from the same connection and the same statement as the
data: so a database replaced behind the same DSN can never have its rows
merged into what was read from the one before it (docs/design.md, Invariants 7).
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

# Many whole hours at once (a cold series): one row per hour that has a
# counter row among $1, with its users; a single row of NULLs when none has,
# so that the identity always comes back. One statement, one snapshot. The
# users come from one scan of the (hour, username) primary key, grouped by
# hour, rather than one lookup per hour: a month of hours is one index range.
HOURS_ALL = f"""
WITH users AS (
    SELECT u.hour, array_agg(u.username) AS names FROM hour_users u WHERE u.hour = ANY($1::bigint[]) GROUP BY u.hour
)
SELECT {IDENTITY_COLUMNS}, c.clicks, c.impressions, c.version, COALESCE(users.names, '{{}}'::text[]), c.hour
FROM reactions_identity() i
LEFT JOIN hour_counts c ON c.hour = ANY($1::bigint[])
LEFT JOIN users ON users.hour = c.hour
"""

# The version and epoch of some hours (those with a counter row), for the
# cached-hours check: one scan of hour_counts, its three columns aggregated
# side by side (one aggregation: the arrays keep the same row order), and
# empty arrays when no hour has a row, so that the identity always comes back.
HOUR_VERSIONS = f"""
SELECT {IDENTITY_COLUMNS}, v.hours, v.versions, v.epochs
FROM reactions_identity() i CROSS JOIN (
    SELECT COALESCE(array_agg(c.hour), '{{}}') AS hours, COALESCE(array_agg(c.version), '{{}}') AS versions,
           COALESCE(array_agg(c.epoch), '{{}}') AS epochs
    FROM hour_counts c WHERE c.hour = ANY($1::bigint[])
) v
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
    def database(self) -> tuple[int, int, str]:
        """Two shards with the same one are the same database: it must never be summed twice.

        The schema UUID is part of it: a physical copy of a database keeps the
        system identifier and the OID, and the new UUID every restore ends with
        is what makes it another shard's database.
        """
        return (self.system_identifier, self.database_oid, self.shard_uuid)

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
class ShardHours:
    """One shard's view of several whole hours, read in one snapshot."""

    identity: ShardIdentity
    by_hour: dict[int, ShardHour]

    def hour(self, hour: int) -> ShardHour:
        """The hour as this shard holds it (empty where no batch touched it)."""
        found = self.by_hour.get(hour)
        return found if found is not None else ShardHour(self.identity, 0, 0, EMPTY_VERSION, [])


async def fetch_hours(conn: asyncpg.Connection, hours: Sequence[int]) -> ShardHours:
    """Counters, version and every user of each of ``hours`` (a cold series: one round trip)."""
    rows = await conn.fetch(HOURS_ALL, list(hours))
    identity = _identity(rows[0])
    return ShardHours(identity, {row[8]: _shard_hour(row) for row in rows if row[8] is not None})


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
