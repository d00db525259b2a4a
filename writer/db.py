"""All SQL of the writer."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence

import asyncpg

from common import partitions
from common.events import Reaction
from common.pg import (
    HeldConnections,
    WaitBounds,
    bounded_connection,
    create_pool_with_retry,
    init_connection,
    is_connection_error,
    is_open,
    keep_session,
    server_settings,
)
from common.schema import COMMIT_GUARD, LATE_COMMIT_SQLSTATE, LATE_WRITES_CHANNEL, migrate
from writer.batcher import NotStored, OutcomeUnknown, TooLate

log = logging.getLogger(__name__)

# One statement, so one round trip and (outside a transaction block) one
# commit per batch:
# - ``ev`` appends the raw events; a repeated idempotency key inserts nothing;
# - ``hc`` adds the inserted events to their hours' counters in hour order
#   (so two batches lock hours in the same order) and bumps each hour's
#   version under the row lock it then holds until commit;
# - the final INSERT adds first-seen users with that version;
# - the SELECT notifies the aggregators of every hour but the current one;
#   PostgreSQL delivers a NOTIFY only if the transaction commits;
# - with a deadline, ``guard`` is ``guard_commit``'s row: the transaction
#   rolls back rather than commit past it (README, Invariants 8).
COMMIT_BATCH = f"""
WITH ev AS (
    INSERT INTO reactions (ts, hour, username, event, idem_key)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::smallint[], $5::text[])
    ON CONFLICT (username, idem_key, hour) WHERE idem_key IS NOT NULL DO NOTHING
    RETURNING hour, username, event
), per_hour AS (
    SELECT hour,
           count(*) FILTER (WHERE event = 1) AS clicks,
           count(*) FILTER (WHERE event = 2) AS impressions
    FROM ev GROUP BY hour ORDER BY hour
), hc AS (
    INSERT INTO hour_counts AS h (hour, clicks, impressions, version)
    SELECT hour, clicks, impressions, 1 FROM per_hour
    ON CONFLICT (hour) DO UPDATE
        SET clicks = h.clicks + excluded.clicks,
            impressions = h.impressions + excluded.impressions,
            version = h.version + 1
    RETURNING hour, version
), hu AS (
    INSERT INTO hour_users (hour, username, version)
    SELECT DISTINCT ev.hour, ev.username, hc.version FROM ev JOIN hc USING (hour)
    ON CONFLICT (hour, username) DO NOTHING
)
SELECT hour, pg_notify('{LATE_WRITES_CHANNEL}', hour::text)
FROM hc WHERE hour <> $6
"""
COMMIT_BATCH_GUARDED = COMMIT_BATCH.replace(
    "WITH ev AS (", f"WITH guard AS ({COMMIT_GUARD.format(deadline='$7')}), ev AS (", 1)


async def guard_commit(conn: asyncpg.Connection, deadline: float) -> None:
    """Make the open transaction roll back if it would commit after ``deadline`` (seconds since the epoch).

    Every write path calls it inside its transaction (README, Invariants 8).
    It adds one row to ``commit_guard``; a deferred constraint trigger checks
    it once, when the transaction commits, against PostgreSQL's clock, and
    removes it (common/schema.py). A commit refused there raises an error
    whose SQLSTATE is ``LATE_COMMIT_SQLSTATE``: rolled back, certainly not
    stored. ``commit_batch`` puts the same row in its own single statement.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("guard_commit needs an open transaction: outside one it would guard nothing")
    await conn.execute(COMMIT_GUARD.format(deadline="$1"), deadline)


async def commit_batch(conn: asyncpg.Connection, batch: Sequence[Reaction], current_hour: int,
                       deadline: float = math.inf) -> None:
    """Commit a batch of reactions in one transaction (synchronous_commit on), by ``deadline`` if finite.

    Batches with idempotency keys insert them in one order, (user, key), so
    that two batches of one shard holding the same retried keys wait for each
    other instead of deadlocking.
    """
    keys = None  # no event has a key: unnest pads the keys with NULLs, and nothing is encoded
    if any(r.idempotency_key is not None for r in batch):
        batch = sorted(batch, key=lambda r: (r.username, r.idempotency_key or ""))
        keys = [r.idempotency_key for r in batch]
    args = ([r.ts for r in batch], [r.hour for r in batch], [r.username for r in batch],
            [int(r.event) for r in batch], keys, current_hour)
    if math.isfinite(deadline):
        await conn.execute(COMMIT_BATCH_GUARDED, *args, deadline)
    else:
        await conn.execute(COMMIT_BATCH, *args)


async def commit_bounded(
    connections: HeldConnections, bounds: WaitBounds, batch: Sequence[Reaction], current_hour: int,
    deadline: float = math.inf,
) -> None:
    """Commit within ``bounds`` and by ``deadline``; raise ``NotStored`` or ``OutcomeUnknown`` when it does not.

    Not stored, certainly: no connection within the bound (nothing was sent),
    or PostgreSQL reported an error (a single statement outside a transaction
    block: the error rolled it back). Unknown: the statement was sent and its
    answer never came (a timeout, a lost or shut-down connection).

    A batch with an event for a day that has no partition (a late event, a
    day already pruned) fails at once and is rolled back; its days'
    partitions are made and the batch is committed once more, each step
    within the commit bound.
    """
    try:
        conn = await connections.take()
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # Nothing was sent: no connection within the bound.
        raise NotStored(f"database unreachable ({type(exc).__name__}); retry") from exc
    failure: BaseException | None = None
    try:
        if not is_open(conn):
            raise NotStored("database connection closed before the commit; retry")
        try:
            await _commit_once(conn, bounds, batch, current_hour, deadline)
        except MissingPartition:
            await add_partitions(conn, bounds, {partitions.day_of_hour(r.hour) for r in batch})
            await _commit_once(conn, bounds, batch, current_hour, deadline)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        await connections.give_back(conn, failure)


class MissingPartition(NotStored):
    """The batch held an event for a day without a partition: rolled back, nothing stored."""


class CannotWrite(NotStored):
    """PostgreSQL could not write (no space left, an I/O error) and rolled the batch back."""


# Class 53 (insufficient resources: disk_full is 53100) and io_error: a shard
# that cannot write, which the health probe must then see (writer/health.py).
CANNOT_WRITE_SQLSTATES = ("53100", "58030")


async def _commit_once(
    conn: asyncpg.Connection, bounds: WaitBounds, batch: Sequence[Reaction], current_hour: int, deadline: float
) -> None:
    """One commit of the batch, its failure classified."""
    try:
        async with asyncio.timeout(bounds.statement_s):
            await commit_batch(conn, batch, current_hour, deadline)
    except asyncpg.PostgresError as exc:
        if is_connection_error(exc):
            raise OutcomeUnknown(f"connection lost during the commit ({exc.sqlstate})") from exc
        raise refusal(exc) from exc
    except TimeoutError as exc:
        raise OutcomeUnknown(f"no answer to the commit within {bounds.statement_s:g} s") from exc
    except (OSError, asyncpg.InterfaceError) as exc:
        raise OutcomeUnknown(f"connection lost during the commit ({type(exc).__name__})") from exc


# PostgreSQL's check_violation: what an INSERT into a partitioned table reports
# for a row that no partition accepts.
NO_PARTITION_SQLSTATE = "23514"


def refusal(exc: asyncpg.PostgresError) -> NotStored:
    """What an error PostgreSQL reported (not a lost connection) means: it rolled the commit back."""
    if exc.sqlstate == LATE_COMMIT_SQLSTATE:
        return TooLate("PostgreSQL rolled the commit back: it came past its deadline; it will never be"
                       " stored; retry", where="database")
    if exc.sqlstate == NO_PARTITION_SQLSTATE and "no partition" in str(exc):
        return MissingPartition(f"no partition for an event's day ({exc.sqlstate})")
    if (exc.sqlstate or "").startswith(CANNOT_WRITE_SQLSTATES):
        return CannotWrite(f"database could not write; rolled the commit back ({exc.sqlstate})")
    return NotStored(f"database rolled the commit back ({exc.sqlstate})")


async def add_partitions(conn: asyncpg.Connection, bounds: WaitBounds, days: set[int]) -> None:
    """Make the partitions of ``days``; NotStored if that fails (the batch was already rolled back)."""
    try:
        async with asyncio.timeout(bounds.statement_s):
            created = await partitions.ensure_days(conn, days)
    except TimeoutError as exc:  # raised from the timeout: HeldConnections terminates the connection
        raise NotStored("creating a day's partition took too long; retry") from exc
    except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
        raise NotStored(f"could not create a day's partition ({type(exc).__name__}); retry") from exc
    if created:
        log.info("created the raw log's partitions for days %s on demand", created)


# The (key, part) records of batches past their own retention (README, Batches).
PRUNE_BATCH_PARTS = "DELETE FROM batch_parts WHERE committed_at < now() - make_interval(days => $1)"


async def maintain_partitions(pool: asyncpg.Pool, bounds: WaitBounds, today: int, retention_days: int,
                              batch_key_retention_days: int | None = None
                              ) -> tuple[list[int], list[partitions.Pruned]]:
    """Create the partitions ahead of today and drop those past the retention, within ``bounds``.

    With ``batch_key_retention_days``, batch parts' records older than that are deleted too.
    """
    async with bounded_connection(pool, bounds) as conn, asyncio.timeout(bounds.statement_s):
        created = await partitions.ensure_ahead(conn, today)
        pruned = await partitions.prune(conn, today, retention_days)
        if batch_key_retention_days is not None:
            status = await conn.execute(PRUNE_BATCH_PARTS, batch_key_retention_days)
            if status != "DELETE 0":
                log.info("batch keys: %s record(s) past %d days", status, batch_key_retention_days)
    return created, pruned


# The health probe: a durable commit of this writer's heartbeat row. A SELECT
# would pass on a shard that can no longer commit (a full disk, a stuck WAL).
# It returns PostgreSQL's clock, for the writer's skew to it (writer/settle.py).
HEARTBEAT = """
INSERT INTO writer_heartbeat AS h (writer, beats, at) VALUES ($1, 1, now())
ON CONFLICT (writer) DO UPDATE SET beats = h.beats + 1, at = now()
RETURNING extract(epoch FROM clock_timestamp())::float8
"""


# A new, empty database behind the DSN (re-initialised, restored from a bare
# backup) gets the schema from the next heartbeat; DDL may take a while.
MIGRATE_TIMEOUT_S = 30.0


# Proof that the shard can allocate space: a table made and filled in a
# transaction that is then rolled back (its file is removed). Two pages of
# rows too small to be compressed or moved out of line: each new page is
# written to the file as it is added, so a full disk fails here at once.
SPACE_PROBE = """
CREATE TABLE writer_space_probe (pad bytea);
INSERT INTO writer_space_probe SELECT decode(repeat('a5', 1000), 'hex') FROM generate_series(1, 16);
"""


async def heartbeat(pool: asyncpg.Pool, bounds: WaitBounds, writer: str, prove_space: bool = False) -> float:
    """Commit one heartbeat within ``bounds`` (first proving space, if asked); raise on any failure.

    Returns this writer's clock minus PostgreSQL's, in seconds (PostgreSQL's
    clock read against the middle of the heartbeat's round trip: off by at
    most half of it). A database without the schema is given it first
    (bounded by MIGRATE_TIMEOUT_S).
    """
    try:
        async with bounded_connection(pool, bounds) as conn, asyncio.timeout(bounds.statement_s):
            if prove_space:
                await _prove_space(conn)
            return await _beat(conn, writer)
    except asyncpg.UndefinedTableError:
        migration = WaitBounds(acquire_s=bounds.acquire_s, statement_s=MIGRATE_TIMEOUT_S)
        async with bounded_connection(pool, migration) as conn, asyncio.timeout(MIGRATE_TIMEOUT_S):
            await migrate(conn)
            return await _beat(conn, writer)


async def _beat(conn: asyncpg.Connection, writer: str) -> float:
    sent = time.time()
    server_clock = await conn.fetchval(HEARTBEAT, writer)
    return (sent + time.time()) / 2 - float(server_clock)


async def _prove_space(conn: asyncpg.Connection) -> None:
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(SPACE_PROBE)
    finally:
        await transaction.rollback()


# Session settings of every writer connection, sent when it connects. They
# are the session's defaults, so even a RESET ALL keeps them: a writer commits
# durably whatever the server's or the database's default says.
SESSION_SETTINGS = {"synchronous_commit": "on", "application_name": "reactions-writer"}


# Connecting at start-up may take a few round trips on a slow link; later
# connections are made inside ``acquire`` and bounded by its own timeout.
CONNECT_TIMEOUT_S = 5.0


async def open_pool(dsn: str, min_size: int, max_size: int, bounds: WaitBounds) -> asyncpg.Pool:
    return await create_pool_with_retry(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT_S,
        # Keep idle connections: a new one costs round trips the commit bound may not have (a slow link).
        max_inactive_connection_lifetime=0,
        server_settings=server_settings(bounds, **SESSION_SETTINGS),
        init=init_connection,
        reset=keep_session,
    )
