"""The raw log's upkeep by the writer: partitions ahead of time, and days past the retention dropped.

It runs in its own task on its own pooled connection, never in the commit
path: its DDL waits at most a short lock timeout (common/partitions.py) and
a round that fails is logged and tried again at the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from common import partitions
from common.hours import current_hour

log = logging.getLogger(__name__)

# Days only turn at midnight and partitions are made two days ahead: a round
# every ten minutes keeps both far from the edge at the cost of one catalog
# query. A failed round is retried sooner.
MAINTENANCE_INTERVAL_S = 600.0
RETRY_INTERVAL_S = 30.0
# One round: a catalog query, a few CREATEs and DROPs, each with its own lock
# and statement limits; this bounds the whole round.
ROUND_TIMEOUT_S = 60.0

Maintain = Callable[[int], Awaitable[tuple[list[int], list[partitions.Pruned]]]]


async def maintain_once(maintain: Maintain) -> bool:
    """One round for today; whether it succeeded."""
    try:
        created, pruned = await maintain(partitions.day_of_hour(current_hour()))
    except Exception as exc:  # a lock it could not get, a database away: next round
        log.warning("raw log upkeep failed (%s: %s); trying again in %.0f s", type(exc).__name__, exc,
                    RETRY_INTERVAL_S)
        return False
    if created:
        log.info("raw log: created the partitions of days %s", created)
    for day in pruned:
        log.info("raw log: dropped %s, %s (%d bytes)", day.name, partitions.hour_range_text(day.day), day.bytes)
    return True


async def run(maintain: Maintain, interval_s: float = MAINTENANCE_INTERVAL_S) -> None:
    """Forever: a round now, then one every ``interval_s``."""
    while True:
        ok = await maintain_once(maintain)
        await asyncio.sleep(interval_s if ok else min(interval_s, RETRY_INTERVAL_S))
