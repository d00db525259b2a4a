"""All SQL of the writer."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from common.events import Reaction
from common.pg import create_pool_with_retry
from common.schema import LATE_WRITES_CHANNEL

# One statement, so one round trip and (outside a transaction block) one
# commit per batch:
# - ``ev`` appends the raw events; a repeated idempotency key inserts nothing;
# - ``hc`` adds the inserted events to their hours' counters in hour order
#   (so two batches lock hours in the same order) and bumps each hour's
#   version under the row lock it then holds until commit;
# - the final INSERT adds first-seen users with that version;
# - the SELECT notifies the aggregators of every hour but the current one;
#   PostgreSQL delivers a NOTIFY only if the transaction commits.
COMMIT_BATCH = f"""
WITH ev AS (
    INSERT INTO reactions (ts, hour, username, event, idem_key)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::smallint[], $5::text[])
    ON CONFLICT (username, idem_key) WHERE idem_key IS NOT NULL DO NOTHING
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


async def commit_batch(
    conn: asyncpg.Connection, batch: Sequence[Reaction], current_hour: int, timeout_s: float | None = None
) -> None:
    """Commit a batch of reactions in one transaction (synchronous_commit on).

    Batches with idempotency keys insert them in one order, (user, key), so
    that two batches of one shard holding the same retried keys wait for each
    other instead of deadlocking.
    """
    if any(r.idempotency_key is not None for r in batch):
        batch = sorted(batch, key=lambda r: (r.username, r.idempotency_key or ""))
    await conn.execute(
        COMMIT_BATCH,
        [r.ts for r in batch],
        [r.hour for r in batch],
        [r.username for r in batch],
        [int(r.event) for r in batch],
        [r.idempotency_key for r in batch],
        current_hour,
        timeout=timeout_s,
    )


async def ping(conn: asyncpg.Connection) -> None:
    await conn.fetchval("SELECT 1")


# Session settings of every writer connection, sent when it connects. They
# are the session's defaults, so even a RESET ALL keeps them: a writer commits
# durably whatever the server's or the database's default says.
SESSION_SETTINGS = {"synchronous_commit": "on", "application_name": "reactions-writer"}


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool release hook: writer sessions hold no state to reset.

    asyncpg's default reset sends a query (unlock, CLOSE ALL, UNLISTEN,
    RESET ALL) on every release: one more round trip per batch, for nothing.
    """


async def open_pool(dsn: str, min_size: int, max_size: int) -> asyncpg.Pool:
    return await create_pool_with_retry(
        dsn, min_size=min_size, max_size=max_size, server_settings=SESSION_SETTINGS, reset=keep_session
    )
