"""The per-shard schema, created or migrated idempotently at start-up.

Tables:
- ``reactions``: append-only raw events, the audit log the rollups can be
  rebuilt from, partitioned by day and expired after a retention
  (common/partitions.py); ``raw_pruned`` lists the days expired.
- ``hour_counts``: clicks and impressions per hour, plus ``version``, which
  grows by one with every committed batch that touched the hour.
- ``batch_parts``: the (key, part) of every keyed batch part committed here.
- ``hour_users``: one row per distinct user per hour. ``version`` is the
  version of the hour in the batch that first saw the user, so an aggregator
  that has seen an hour at version v fetches only users with a larger one.

Why per-hour versions rather than a global sequence: a batch takes the row
lock on its hours' ``hour_counts`` rows before it adds users, and keeps it to
commit. So within one hour, versions become visible in order, and "everything
above v" never skips a row that commits late. A global sequence value is
taken before commit and can become visible out of order.

Identity: a shard is a database, not a DSN (README, Invariants). What changes
when the database behind a DSN is replaced is read by ``reactions_identity()``:
the cluster's ``system_identifier`` (a new initdb), the database's OID (a
re-created database), the current timeline (a promoted standby or a
point-in-time restore) and ``schema_info.shard_uuid``, made when the schema is
created. A base backup or a dump copies the UUID, so every restore ends with
``UPDATE schema_info SET shard_uuid = gen_random_uuid()``.

The settle bound (README, Invariants 8): a write transaction adds one row to
``commit_guard`` with its deadline, and a deferred constraint trigger on it,
fired once per transaction when it commits (the row is one per transaction,
never one per event), compares ``clock_timestamp()`` with the deadline:
past it, it raises ``LATE_COMMIT_SQLSTATE`` and the transaction rolls back.
Otherwise it deletes its row, so the table holds only the rows of
transactions in flight (and dead ones until a vacuum).
"""

from __future__ import annotations

import asyncpg

from common import partitions

SCHEMA_VERSION = 5
# Any constant works; it keeps two writers of one shard from migrating at once.
MIGRATION_LOCK_ID = 0x52454143  # "REAC"
# How long a migration's statements and lock waits may take (the callers bound it too).
MIGRATION_TIMEOUT_MS = 30_000
# Copying an unpartitioned raw log into day partitions (schema 3 to 4) took
# 11 s per million rows on a loaded 2-core machine: an hour covers a few
# hundred million. A larger log is pruned by hand first, or migrated offline.
LEGACY_COPY_TIMEOUT_MS = 3_600_000

DDL = """
-- Partitioned by the event's hour, one partition per UTC day (common/partitions.py).
-- No primary key: a unique index must hold the partition key, and nothing looks
-- an event up by id (id keeps the order of arrival, for audits).
CREATE TABLE IF NOT EXISTS reactions (
    id        bigint GENERATED ALWAYS AS IDENTITY,
    ts        bigint   NOT NULL CHECK (ts >= 0),
    hour      bigint   NOT NULL,
    username  text     NOT NULL,
    event     smallint NOT NULL CHECK (event IN (1, 2)),
    idem_key  text
) PARTITION BY RANGE (hour);
-- An idempotency key is a client's own (two users may pick the same one) and
-- is unique per user and hour of the event: a retry carries the same
-- timestamp, so it lands in the same hour and the same day's partition.
CREATE UNIQUE INDEX IF NOT EXISTS reactions_user_idem_key_hour ON reactions (username, idem_key, hour)
    WHERE idem_key IS NOT NULL;
-- The days whose raw rows were dropped (common/partitions.py): their hours
-- can no longer be verified against the raw log, whatever arrives later.
CREATE TABLE IF NOT EXISTS raw_pruned (
    day        bigint PRIMARY KEY,
    pruned_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS hour_counts (
    hour         bigint PRIMARY KEY,
    clicks       bigint NOT NULL,
    impressions  bigint NOT NULL,
    version      bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS hour_users (
    hour      bigint NOT NULL,
    username  text   NOT NULL,
    version   bigint NOT NULL,
    PRIMARY KEY (hour, username)
);
CREATE INDEX IF NOT EXISTS hour_users_by_version ON hour_users (hour, version);
-- Bumped by a repair (common/rollups.py) that rewrote the hour: users may
-- have been removed, so an aggregator holding the hour reads it whole again.
ALTER TABLE hour_counts ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;
-- The parts of keyed batches this shard committed (POST /analytics/batch,
-- writer/batch_db.py): written in the part's own transaction, read by a
-- retry of the same key to commit only what is missing and to refuse another
-- body (422). ``part`` identifies the part (a digest of its record numbers,
-- the same for every try of the same key, body and placement); ``records``
-- is the bitmap of the record numbers this row committed (bit n-1 of the
-- little-endian integer is record n). Kept REACTIONS_BATCH_KEY_RETENTION_DAYS
-- whatever the raw log's retention (writer/retention.py prunes it).
CREATE TABLE IF NOT EXISTS batch_parts (
    idem_key      text        NOT NULL,
    part          text        NOT NULL,
    body_digest   bytea       NOT NULL,
    records       bytea       NOT NULL,
    events        integer     NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (idem_key, part)
);
CREATE INDEX IF NOT EXISTS batch_parts_committed_at ON batch_parts (committed_at);
CREATE TABLE IF NOT EXISTS schema_info (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    integer NOT NULL
);
-- A volatile default: the existing row of an older schema gets its own UUID too.
ALTER TABLE schema_info ADD COLUMN IF NOT EXISTS shard_uuid uuid NOT NULL DEFAULT gen_random_uuid();
-- One row per writer, rewritten by its health probe: a durable commit that
-- fails when the shard cannot commit (frozen, cut off, read-only, disk full).
CREATE TABLE IF NOT EXISTS writer_heartbeat (
    writer  text PRIMARY KEY,
    beats   bigint NOT NULL,
    at      timestamptz NOT NULL
);
-- A write transaction's deadline (README, Invariants 8): one row per
-- transaction, checked and removed when the transaction commits (below).
CREATE TABLE IF NOT EXISTS commit_guard (
    xact      xid8 PRIMARY KEY DEFAULT pg_current_xact_id(),
    deadline  timestamptz NOT NULL
);
CREATE OR REPLACE FUNCTION reactions_commit_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF clock_timestamp() > NEW.deadline THEN
        RAISE EXCEPTION 'commit refused: % past its deadline, certainly not stored',
            clock_timestamp() - NEW.deadline USING ERRCODE = 'RS001';
    END IF;
    DELETE FROM commit_guard WHERE xact = NEW.xact;
    RETURN NULL;
END
$$;
-- Deferred: it runs when the transaction commits, after every statement of it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'commit_deadline'
                   AND tgrelid = 'commit_guard'::regclass) THEN
        CREATE CONSTRAINT TRIGGER commit_deadline AFTER INSERT ON commit_guard
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION reactions_commit_guard();
    END IF;
END
$$;
-- The timeline is the first 8 hex digits of the current WAL file's name (a
-- checkpoint's timeline lags a promotion); a standby reports its last checkpoint's.
CREATE OR REPLACE FUNCTION reactions_identity(
    OUT system_identifier bigint, OUT database_oid bigint, OUT timeline integer, OUT shard_uuid uuid
) LANGUAGE sql STABLE AS $$
    SELECT (SELECT c.system_identifier FROM pg_control_system() c),
           (SELECT d.oid::bigint FROM pg_database d WHERE d.datname = current_database()),
           CASE WHEN pg_is_in_recovery() THEN (SELECT k.timeline_id FROM pg_control_checkpoint() k)
                ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::integer END,
           (SELECT s.shard_uuid FROM schema_info s)
$$;
"""

# Writers NOTIFY this channel with the hour (as text) of every committed
# batch that touched an hour other than the current one.
LATE_WRITES_CHANNEL = "reactions_late_hours"

# A write transaction's deadline: every write path runs it inside its
# transaction (writer/db.py ``guard_commit``), ``{deadline}`` being the
# placeholder of seconds since the epoch.
COMMIT_GUARD = "INSERT INTO commit_guard (deadline) VALUES (to_timestamp({deadline}::float8))"
# What the guard's trigger raises for a commit past its deadline: rolled back.
LATE_COMMIT_SQLSTATE = "RS001"


# Schema 3 and older: ``reactions`` was one table with a primary key on id
# and a unique index on (username, idem_key). It is set aside, and its rows are
# copied into the partitioned table in the migration's transaction.
SET_ASIDE_UNPARTITIONED = """
ALTER TABLE reactions RENAME TO reactions_unpartitioned;
DROP INDEX IF EXISTS reactions_user_idem_key;
DROP INDEX IF EXISTS reactions_idem_key;
"""


async def _copy_unpartitioned(conn: asyncpg.Connection) -> None:
    """Every row of the old table into its day's partition, ids kept; then drop the old table.

    In the migration's transaction: the shard's rows move all at once or not
    at all, and nobody writes meanwhile (the rename holds an exclusive lock).
    It rewrites the table once; rollups stay readable throughout.
    """
    await conn.execute(f"SET LOCAL statement_timeout = {LEGACY_COPY_TIMEOUT_MS}")
    hours = await conn.fetch("SELECT DISTINCT hour FROM reactions_unpartitioned")
    await partitions.ensure_days(conn, {partitions.day_of_hour(r["hour"]) for r in hours})
    await conn.execute(
        "INSERT INTO reactions (id, ts, hour, username, event, idem_key) OVERRIDING SYSTEM VALUE "
        "SELECT id, ts, hour, username, event, idem_key FROM reactions_unpartitioned"
    )
    await conn.execute("SELECT setval(pg_get_serial_sequence('reactions', 'id'), "
                       "(SELECT coalesce(max(id), 0) + 1 FROM reactions), false)")
    await conn.execute("DROP TABLE reactions_unpartitioned")


async def migrate(conn: asyncpg.Connection) -> None:
    """Create the schema if missing. Safe when several processes start at once."""
    async with conn.transaction():
        # Sessions carry short statement and lock limits for the hot path; DDL,
        # or a wait for another writer's migration, may need longer.
        await conn.execute(f"SET LOCAL statement_timeout = {MIGRATION_TIMEOUT_MS}; "
                           f"SET LOCAL lock_timeout = {MIGRATION_TIMEOUT_MS}")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
        found = await conn.fetchval("SELECT to_regclass('schema_info') IS NOT NULL")
        if found:
            version = await conn.fetchval("SELECT version FROM schema_info")
            if version is not None and version > SCHEMA_VERSION:
                raise RuntimeError(f"shard schema version {version} is newer than this code ({SCHEMA_VERSION})")
        legacy = await conn.fetchval("SELECT relkind = 'r' FROM pg_class WHERE oid = to_regclass('reactions')")
        if legacy:
            await conn.execute(SET_ASIDE_UNPARTITIONED)
        await conn.execute(DDL)
        if legacy:
            await _copy_unpartitioned(conn)
        await conn.execute(
            "INSERT INTO schema_info (version) VALUES ($1) ON CONFLICT (singleton) DO UPDATE SET version = $1",
            SCHEMA_VERSION,
        )
