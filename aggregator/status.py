"""The JSON that ``GET /shards`` serves for one shard: what operators and ``add-shard`` read."""

from __future__ import annotations

import time
from typing import Any

from aggregator.fanout import ShardStatus
from common.pg import redact
from sharding.config import Shard


def age(at: float | None, now: float) -> float | None:
    return None if at is None else round(now - at, 3)


def shard_json(shard: Shard, status: ShardStatus | None, listening: bool) -> dict[str, Any]:
    """Name, state, DSN without its password, identity, and the last read's outcome (ages in seconds)."""
    status = status or ShardStatus()
    now = time.monotonic()
    return {
        "name": shard.name,
        "state": shard.state,
        "dsn": redact(shard.dsn),
        "identity": status.identity.to_json() if status.identity is not None else None,
        "healthy": status.healthy,
        "last_answer_age_s": age(status.ok_at, now),
        "last_failure_age_s": age(status.failed_at, now),
        "last_error": status.error,
        "listening": listening,
    }
