"""Connecting to a shard's PostgreSQL, with bounded retries."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

# Containers start in any order: a database may take a while to accept
# connections. Retry this many times, this far apart, then fail loudly.
CONNECT_ATTEMPTS = 30
CONNECT_RETRY_DELAY_S = 1.0


async def create_pool_with_retry(
    dsn: str,
    *,
    attempts: int = CONNECT_ATTEMPTS,
    delay_s: float = CONNECT_RETRY_DELAY_S,
    **pool_kwargs: Any,
) -> asyncpg.Pool:
    """``asyncpg.create_pool`` that waits for a database that is still starting."""
    for attempt in range(1, attempts + 1):
        try:
            return await asyncpg.create_pool(dsn, **pool_kwargs)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if attempt == attempts:
                raise
            log.warning("cannot reach %s yet (%s); retry %d/%d", redact(dsn), exc, attempt, attempts)
            await asyncio.sleep(delay_s)
    raise AssertionError("unreachable")


def redact(dsn: str) -> str:
    """A DSN without its password, for logs."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
