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
"""

from __future__ import annotations

import asyncpg

SCHEMA_VERSION = 2
# Any constant works; it keeps two writers of one shard from migrating at once.
MIGRATION_LOCK_ID = 0x52454143  # "REAC"

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
"""

# Writers NOTIFY this channel with the hour (as text) of every committed
# batch that touched an hour other than the current one.
LATE_WRITES_CHANNEL = "reactions_late_hours"


async def migrate(conn: asyncpg.Connection) -> None:
    """Create the schema if missing. Safe when several processes start at once."""
    async with conn.transaction():
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
