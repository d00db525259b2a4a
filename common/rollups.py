"""Checking the rollups against the raw log, and rebuilding an hour from it.

An hour is covered by the raw log if none of its raw rows was ever pruned:
its day is not in ``raw_pruned`` (common/partitions.py). A late event may
give a pruned day a new partition with a few rows; the day stays listed, so
those rows never make the hour look covered.

``verify`` reads raw events and rollups in one REPEATABLE READ snapshot (a
batch writes both in one statement, so a snapshot never sees half of one).
``repair`` rewrites one hour in one transaction: it first takes the hour's
``hour_counts`` row lock, as every batch does before it touches the hour's
users, so no batch commits to the hour meanwhile, and then recounts the raw
rows in a snapshot taken under that lock. A batch whose raw rows were not
yet committed waits on the lock and adds its own events to the rebuilt
counters afterwards. The repair bumps the hour's ``epoch``: an aggregator
holding the hour sees it change and reads the hour whole again, so a user
that the repair removed does not linger (aggregator/live.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

# A verify scans the whole raw log: give it time, but a bound.
VERIFY_STATEMENT_TIMEOUT_MS = 600_000
# A repair holds one hour's row lock; batches for that hour wait on it.
REPAIR_LOCK_TIMEOUT_MS = 2_000
REPAIR_STATEMENT_TIMEOUT_MS = 60_000
# Users listed per hour in a report (the counts say how many there are).
SHOWN_USERS = 5

COUNT_DIFFERENCES = """
WITH raw AS (
    SELECT hour, count(*) FILTER (WHERE event = 1) AS clicks, count(*) FILTER (WHERE event = 2) AS impressions
    FROM reactions GROUP BY hour
)
SELECT hour, coalesce(raw.clicks, 0) AS raw_clicks, coalesce(raw.impressions, 0) AS raw_impressions,
       coalesce(c.clicks, 0) AS clicks, coalesce(c.impressions, 0) AS impressions
FROM raw FULL JOIN hour_counts c USING (hour)
WHERE NOT EXISTS (SELECT 1 FROM raw_pruned p WHERE p.day = hour / 24)
  AND (coalesce(raw.clicks, 0), coalesce(raw.impressions, 0))
      IS DISTINCT FROM (coalesce(c.clicks, 0), coalesce(c.impressions, 0))
"""

USER_DIFFERENCES = """
SELECT hour,
       array_agg(username ORDER BY username) FILTER (WHERE u.username IS NULL) AS missing,
       array_agg(username ORDER BY username) FILTER (WHERE r.username IS NULL) AS extra
FROM (SELECT DISTINCT hour, username FROM reactions) r
FULL JOIN hour_users u USING (hour, username)
WHERE (r.username IS NULL OR u.username IS NULL)
  AND NOT EXISTS (SELECT 1 FROM raw_pruned p WHERE p.day = hour / 24)
GROUP BY hour
"""

COVERAGE = """
SELECT count(*) FILTER (WHERE NOT pruned) AS covered, count(*) FILTER (WHERE pruned) AS uncovered
FROM (SELECT hour, EXISTS (SELECT 1 FROM raw_pruned p WHERE p.day = hour / 24) AS pruned
      FROM (SELECT hour FROM hour_counts UNION SELECT DISTINCT hour FROM reactions) h) x
"""


@dataclass
class HourDifference:
    """How an hour's rollups differ from its raw events."""

    hour: int
    raw_clicks: int = 0
    raw_impressions: int = 0
    clicks: int = 0
    impressions: int = 0
    missing_users: list[str] = field(default_factory=list)  # in the raw log, not in hour_users
    extra_users: list[str] = field(default_factory=list)  # in hour_users, not in the raw log

    def describe(self) -> str:
        parts = []
        if (self.clicks, self.impressions) != (self.raw_clicks, self.raw_impressions):
            parts.append(f"clicks {self.clicks} (raw {self.raw_clicks}), "
                         f"impressions {self.impressions} (raw {self.raw_impressions})")
        for label, users in (("missing", self.missing_users), ("extra", self.extra_users)):
            if users:
                shown = ", ".join(users[:SHOWN_USERS]) + (" ..." if len(users) > SHOWN_USERS else "")
                parts.append(f"{len(users)} user(s) {label} from hour_users: {shown}")
        return f"hour {self.hour}: " + "; ".join(parts)


@dataclass
class Verification:
    covered_hours: int
    uncovered_hours: int
    differences: list[HourDifference]


async def verify(conn: asyncpg.Connection) -> Verification:
    """Every covered hour recomputed from the raw events and compared with its rollups."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {VERIFY_STATEMENT_TIMEOUT_MS}")
        coverage = await conn.fetchrow(COVERAGE)
        by_hour: dict[int, HourDifference] = {}
        for row in await conn.fetch(COUNT_DIFFERENCES):
            by_hour[row["hour"]] = HourDifference(row["hour"], row["raw_clicks"], row["raw_impressions"],
                                                  row["clicks"], row["impressions"])
        counters_agree = []
        for row in await conn.fetch(USER_DIFFERENCES):
            diff = by_hour.get(row["hour"])
            if diff is None:
                diff = by_hour[row["hour"]] = HourDifference(row["hour"])
                counters_agree.append(diff)
            diff.missing_users = list(row["missing"] or [])
            diff.extra_users = list(row["extra"] or [])
        await _fill_counters(conn, counters_agree)
    return Verification(coverage["covered"], coverage["uncovered"], sorted(by_hour.values(), key=lambda d: d.hour))


async def _fill_counters(conn: asyncpg.Connection, diffs: list[HourDifference]) -> None:
    """The counters of hours that differ only in users (the same on both sides), for the report."""
    for diff in diffs:
        row = await conn.fetchrow("SELECT clicks, impressions FROM hour_counts WHERE hour = $1", diff.hour)
        if row is not None:
            diff.clicks = diff.raw_clicks = row["clicks"]
            diff.impressions = diff.raw_impressions = row["impressions"]


class NotCovered(Exception):
    """The hour's raw rows were (partly) pruned: the raw log cannot rebuild it."""


REPAIR_LOCK = """
INSERT INTO hour_counts AS h (hour, clicks, impressions, version) VALUES ($1, 0, 0, 0)
ON CONFLICT (hour) DO UPDATE SET version = h.version
"""

REPAIR_COUNTS = """
WITH raw AS (
    SELECT count(*) FILTER (WHERE event = 1) AS clicks, count(*) FILTER (WHERE event = 2) AS impressions
    FROM reactions WHERE hour = $1
)
UPDATE hour_counts h SET clicks = raw.clicks, impressions = raw.impressions,
                         version = h.version + 1, epoch = h.epoch + 1
FROM raw WHERE h.hour = $1
  AND NOT EXISTS (SELECT 1 FROM raw_pruned p WHERE p.day = $1::bigint / 24)
RETURNING h.version
"""

REPAIR_USERS = """
WITH raw AS (SELECT DISTINCT username FROM reactions WHERE hour = $1),
gone AS (
    DELETE FROM hour_users u WHERE u.hour = $1 AND NOT EXISTS (SELECT 1 FROM raw WHERE raw.username = u.username)
)
INSERT INTO hour_users (hour, username, version) SELECT $1, username, $2 FROM raw
ON CONFLICT (hour, username) DO NOTHING
"""


async def repair(conn: asyncpg.Connection, hour: int) -> None:
    """Rebuild one hour's rollups from its raw events, in one transaction; NotCovered if it cannot."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {REPAIR_LOCK_TIMEOUT_MS}; "
                           f"SET LOCAL statement_timeout = {REPAIR_STATEMENT_TIMEOUT_MS}")
        await conn.execute(REPAIR_LOCK, hour)
        # The coverage check and the recount in one snapshot: a prune is either
        # seen in full (its day listed) or not at all (its rows still there).
        version = await conn.fetchval(REPAIR_COUNTS, hour)
        if version is None:
            raise NotCovered(f"hour {hour}: its day's raw events were pruned; the raw log cannot rebuild it")
        await conn.execute(REPAIR_USERS, hour, version)
