"""The per-shard schema, created or migrated idempotently at start-up.

Tables:
- ``reactions``: append-only raw events, the audit log the rollups can be
  rebuilt from.
- ``hour_counts``: clicks and impressions per hour, plus ``version``, which
  grows by one with every committed batch that touched the hour.
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
"""

from __future__ import annotations

import asyncpg

SCHEMA_VERSION = 3
# Any constant works; it keeps two writers of one shard from migrating at once.
MIGRATION_LOCK_ID = 0x52454143  # "REAC"
# How long a migration's statements and lock waits may take (the callers bound it too).
MIGRATION_TIMEOUT_MS = 30_000

DDL = """
CREATE TABLE IF NOT EXISTS reactions (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts        bigint   NOT NULL CHECK (ts >= 0),
    hour      bigint   NOT NULL,
    username  text     NOT NULL,
    event     smallint NOT NULL CHECK (event IN (1, 2)),
    idem_key  text
);
-- An idempotency key is a client's own: two users may pick the same one.
DROP INDEX IF EXISTS reactions_idem_key;
CREATE UNIQUE INDEX IF NOT EXISTS reactions_user_idem_key ON reactions (username, idem_key)
    WHERE idem_key IS NOT NULL;
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
        await conn.execute(DDL)
        await conn.execute(
            "INSERT INTO schema_info (version) VALUES ($1) ON CONFLICT (singleton) DO UPDATE SET version = $1",
            SCHEMA_VERSION,
        )
