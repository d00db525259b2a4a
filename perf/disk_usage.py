"""Bytes on disk per raw event and per user-hour, through the writer's own commit path.

Commits EVENTS events in batches of BATCH (the writer's largest batch) into a
fresh PostgreSQL, then measures, after a VACUUM, the raw log (every day
partition with its index) and ``hour_users`` (with its two indexes)::

    python -m perf.disk_usage [--events 200000] [--users-per-hour 20000] [--rate 10000]

A share of the events (half by default) carries an idempotency key (22
characters, like a ``secrets.token_urlsafe(16)``), as a client retrying
safely would send.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets

import asyncpg

from common import partitions
from common.events import Event, Reaction
from common.hours import MS_PER_HOUR, hour_of, now_ms
from common.schema import migrate
from perf.postgres import bench_postgres
from writer.db import commit_batch

BATCH = 500
HOURS = 4
SECONDS_PER_DAY = 86_400

RAW_BYTES = """
SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('reactions') WHERE isleaf
"""


def events(count: int, users_per_hour: int, key_share: float) -> list[Reaction]:
    start = hour_of(now_ms()) - HOURS
    made = []
    for i in range(count):
        hour = start + i % HOURS
        key = secrets.token_urlsafe(16) if (i * key_share) % 1 + key_share >= 1 else None
        made.append(Reaction(hour * MS_PER_HOUR + i % MS_PER_HOUR, hour, f"user-{i % users_per_hour}",
                             Event.CLICK if i % 3 else Event.IMPRESSION, key))
    return made


async def measure(dsn: str, count: int, users_per_hour: int, key_share: float) -> tuple[float, float]:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        batch = events(count, users_per_hour, key_share)
        await partitions.ensure_days(conn, {partitions.day_of_hour(r.hour) for r in batch})
        for i in range(0, len(batch), BATCH):
            await commit_batch(conn, batch[i:i + BATCH], hour_of(now_ms()))
        await conn.execute("VACUUM ANALYZE")
        raw = float(await conn.fetchval(RAW_BYTES))
        users = await conn.fetchval("SELECT pg_total_relation_size('hour_users')")
        user_hours = await conn.fetchval("SELECT count(*) FROM hour_users")
        return raw / count, users / user_hours
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users-per-hour", type=int, default=20_000)
    parser.add_argument("--key-share", type=float, default=0.5, help="share of events with an idempotency key")
    parser.add_argument("--rate", type=int, default=10_000, help="events per second, for the per-day figure")
    args = parser.parse_args()
    with bench_postgres("reactions-disk-usage-") as (_, [pg]):
        per_event, per_user_hour = asyncio.run(measure(pg.dsn, args.events, args.users_per_hour,
                                                          args.key_share))
    print(f"raw log: {per_event:.1f} bytes per event (table and index; {args.key_share:.0%} of events with a key)")
    print(f"hour_users: {per_user_hour:.1f} bytes per user and hour (table and both indexes)")
    per_day = per_event * args.rate * SECONDS_PER_DAY
    print(f"at {args.rate:,} events/s: {per_day / 1e9:.1f} GB of raw log per day, "
          f"{30 * per_day / 1e12:.2f} TB for a 30-day retention")


if __name__ == "__main__":
    main()
