"""The raw log's day partitions: created ahead, created on demand, dropped after the retention.

``reactions`` is partitioned by RANGE on ``hour``, one partition per UTC day
(hours [24 d, 24 d + 24), named ``reactions_dYYYYMMDD``). Expiring a day is
a ``DROP TABLE`` of its partition, never a ``DELETE``. Rollups are never
expired.

Why no DEFAULT partition: its rows cannot be expired by a DROP; every new
day's partition would have to scan it under an exclusive lock; and a row in
it for a day that has no partition yet would make creating that day fail.
Instead a writer creates yesterday's, today's and the next days' partitions
ahead of time, and a batch holding an event for a day without a partition (a
late event, or a day a prune dropped) fails at once with "no partition", is
certainly not stored, and is committed again after its days' partitions are
made (writer/db.py).

Every dropped day is recorded in ``raw_pruned`` in the transaction that drops
it: an hour of a day listed there is not covered by the raw log any more,
even if a late event later gives the day a new partition with a few rows
(common/rollups.py).

DDL here takes a lock on ``reactions`` that commits then queue behind, so it
waits for that lock at most ``DDL_LOCK_TIMEOUT_MS`` and is simply tried
again later: a prune never stalls the commit path for longer than that.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

HOURS_PER_DAY = 24
PARTITION_PREFIX = "reactions_d"
PARTITION_NAME = re.compile(r"^reactions_d(\d{8})$")
EPOCH_DATE = dt.date(1970, 1, 1)
# Commits queue behind a DDL statement waiting for its lock: a short wait,
# then give up and try again at the next maintenance round.
DDL_LOCK_TIMEOUT_MS = 200
# A DROP or CREATE of one partition is quick once it holds the lock.
DDL_STATEMENT_TIMEOUT_MS = 10_000
# Partitions made ahead of today: writers accept events 5 minutes ahead of
# their clock, so tomorrow is needed just before midnight; one more day keeps
# a missed maintenance round harmless.
DAYS_AHEAD = 2


def day_of_hour(hour: int) -> int:
    """The UTC day (days since the epoch) that holds an hour bucket."""
    return hour // HOURS_PER_DAY


def partition_name(day: int) -> str:
    return PARTITION_PREFIX + (EPOCH_DATE + dt.timedelta(days=day)).strftime("%Y%m%d")


def day_of_partition(name: str) -> int | None:
    """The day a partition holds, from its name; None for a table that is not a day partition."""
    found = PARTITION_NAME.match(name)
    if found is None:
        return None
    return (dt.datetime.strptime(found.group(1), "%Y%m%d").date() - EPOCH_DATE).days


def days_to_keep(today: int, retention_days: int) -> int:
    """The first day kept: ``retention_days`` whole days before today, and today, are kept."""
    return today - retention_days


async def _ddl(conn: asyncpg.Connection, statements: Iterable[tuple[str, tuple[object, ...]]]) -> None:
    """Run statements in one transaction with the DDL limits (inside a migration: with the migration's)."""
    outer = conn.is_in_transaction()
    async with conn.transaction():
        if not outer:
            await conn.execute(f"SET LOCAL lock_timeout = {DDL_LOCK_TIMEOUT_MS}; "
                               f"SET LOCAL statement_timeout = {DDL_STATEMENT_TIMEOUT_MS}")
        for sql, args in statements:
            await conn.execute(sql, *args)


async def existing_days(conn: asyncpg.Connection) -> set[int]:
    """The days that have a partition: one catalog query."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'reactions'::regclass AND c.relkind = 'r'"
    )
    return {day for day in (day_of_partition(r["relname"]) for r in rows) if day is not None}


async def ensure_days(conn: asyncpg.Connection, days: Iterable[int], existing: set[int] | None = None) -> list[int]:
    """Create the partitions of ``days`` that do not exist; the days created.

    ``existing``: the days known to have one (default: asked of the catalog).
    Another writer creating the same day at the same moment is fine: the
    day exists either way.
    """
    missing = sorted(set(days) - (await existing_days(conn) if existing is None else existing))
    created = []
    for day in missing:
        sql = (f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF reactions "
               f"FOR VALUES FROM ({day * HOURS_PER_DAY}) TO ({(day + 1) * HOURS_PER_DAY})")
        try:
            await _ddl(conn, [(sql, ())])
        except (asyncpg.DuplicateTableError, asyncpg.InvalidObjectDefinitionError):
            continue  # made by another session meanwhile ("would overlap" is the same day)
        created.append(day)
    return created


def days_ahead(today: int) -> range:
    """Yesterday, today and the next DAYS_AHEAD days: those whose partitions are made ahead."""
    return range(today - 1, today + DAYS_AHEAD + 1)


async def ensure_ahead(conn: asyncpg.Connection, today: int, existing: set[int] | None = None) -> list[int]:
    """Yesterday's, today's and the next DAYS_AHEAD days' partitions."""
    return await ensure_days(conn, days_ahead(today), existing)


@dataclass(frozen=True)
class Pruned:
    """One dropped day: its partition's name and the bytes it held (a row count would scan it)."""

    day: int
    name: str
    bytes: int


async def prune(conn: asyncpg.Connection, today: int, retention_days: int,
                existing: set[int] | None = None) -> list[Pruned]:
    """Drop every day partition older than the retention, recording each day in ``raw_pruned``.

    ``existing``: the days known to have a partition (default: asked of the
    catalog). One transaction per day: a day is recorded as pruned if and
    only if its partition is gone.
    """
    first_kept = days_to_keep(today, retention_days)
    if existing is None:
        existing = await existing_days(conn)
    dropped = []
    for day in sorted(d for d in existing if d < first_kept):
        name = partition_name(day)
        size = int(await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", name))
        await _ddl(conn, [
            ("INSERT INTO raw_pruned (day, pruned_at) VALUES ($1, now()) "
             "ON CONFLICT (day) DO UPDATE SET pruned_at = now()", (day,)),
            (f"DROP TABLE {name}", ()),
        ])
        dropped.append(Pruned(day, name, size))
    return dropped


async def upkeep(conn: asyncpg.Connection, today: int, retention_days: int) -> tuple[list[int], list[Pruned]]:
    """A maintenance round: the partitions ahead made, then the days past the retention dropped.

    The catalog is asked once: after the first step the days ahead exist too.
    """
    existing = await existing_days(conn)
    created = await ensure_ahead(conn, today, existing)
    return created, await prune(conn, today, retention_days, existing | set(days_ahead(today)))


def hour_range_text(day: int) -> str:
    """A day as a human-readable UTC range, for what prune prints."""
    start = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=day)
    return f"{start:%Y-%m-%d} (hours {day * HOURS_PER_DAY}..{day * HOURS_PER_DAY + HOURS_PER_DAY - 1})"
