"""The raw log's day partitions against a real PostgreSQL: expiry by DROP, late events, migration, keys."""

from __future__ import annotations

import asyncpg

from common import partitions, rollups
from common.events import Event, Reaction
from common.pg import HeldConnections, WaitBounds
from common.schema import SCHEMA_VERSION, migrate
from tests.support.aggregator_app import BASE_HOUR, ts_in, write
from tests.support.shard_db import fetchval
from tests.support.writer_db import rollup
from writer import db

TODAY = partitions.day_of_hour(BASE_HOUR)
OLD_HOUR = BASE_HOUR - 40 * 24
BOUNDS = WaitBounds(acquire_s=2.0, statement_s=5.0)


async def prune(dsn: str, retention_days: int = 30) -> list[partitions.Pruned]:
    conn = await asyncpg.connect(dsn)
    try:
        return await partitions.prune(conn, TODAY, retention_days)
    finally:
        await conn.close()


async def commit(dsn: str, batch: list[Reaction]) -> None:
    """Through the writer's commit path, which makes a missing day's partition."""
    pool = await db.open_pool(dsn, min_size=1, max_size=2, bounds=BOUNDS)
    held = HeldConnections(pool, BOUNDS)
    try:
        await db.commit_bounded(held, BOUNDS, batch, BASE_HOUR)
    finally:
        await held.close()
        await pool.close()


async def test_prune_drops_old_days_and_keeps_every_rollup(shard_dsn: str) -> None:
    await write(shard_dsn, OLD_HOUR, ["ann", "ben"], BASE_HOUR)
    await write(shard_dsn, BASE_HOUR - 29 * 24, ["cid"], BASE_HOUR)  # inside the retention
    await write(shard_dsn, BASE_HOUR, ["dan"], BASE_HOUR)
    before = [await rollup(shard_dsn, h) for h in (OLD_HOUR, BASE_HOUR - 29 * 24, BASE_HOUR)]

    dropped = await prune(shard_dsn)

    assert [p.day for p in dropped] == [partitions.day_of_hour(OLD_HOUR)]
    assert dropped[0].name == partitions.partition_name(partitions.day_of_hour(OLD_HOUR))
    assert await fetchval(shard_dsn, "SELECT to_regclass($1) IS NULL", dropped[0].name)
    assert await fetchval(shard_dsn, "SELECT count(*) FROM reactions") == 2
    assert await fetchval(shard_dsn, "SELECT array_agg(day) FROM raw_pruned") == [dropped[0].day]
    assert [await rollup(shard_dsn, h) for h in (OLD_HOUR, BASE_HOUR - 29 * 24, BASE_HOUR)] == before
    assert await prune(shard_dsn) == []


async def test_a_late_event_for_a_pruned_day_is_counted_and_leaves_its_hour_uncovered(shard_dsn: str) -> None:
    await write(shard_dsn, OLD_HOUR, ["ann"], BASE_HOUR)
    await prune(shard_dsn)
    await commit(shard_dsn, [Reaction(ts_in(OLD_HOUR), OLD_HOUR, "late", Event.CLICK, "k")])

    assert await rollup(shard_dsn, OLD_HOUR) == (2, 0, frozenset({"ann", "late"}))
    conn = await asyncpg.connect(shard_dsn)
    try:
        verification = await rollups.verify(conn)
        # The day's new partition holds one of the hour's two events: not covered, not a mismatch.
        assert (verification.covered_hours, verification.uncovered_hours, verification.differences) == (0, 1, [])
        await conn.execute("UPDATE hour_counts SET clicks = 7 WHERE hour = $1", OLD_HOUR)
        assert (await rollups.verify(conn)).differences == []
        try:
            await rollups.repair(conn, OLD_HOUR)
            raise AssertionError("a repair of an uncovered hour must be refused")
        except rollups.NotCovered:
            pass
        assert await conn.fetchval("SELECT clicks FROM hour_counts WHERE hour = $1", OLD_HOUR) == 7
    finally:
        await conn.close()


async def test_a_key_is_unique_per_user_and_hour_of_its_event(shard_dsn: str) -> None:
    retry = Reaction(ts_in(BASE_HOUR), BASE_HOUR, "ann", Event.CLICK, "k-1")
    await commit(shard_dsn, [retry])
    await commit(shard_dsn, [retry])
    assert await rollup(shard_dsn, BASE_HOUR) == (1, 0, frozenset({"ann"}))
    # The same key on an event of another hour is another event (a retry carries its timestamp).
    await commit(shard_dsn, [Reaction(ts_in(BASE_HOUR - 1), BASE_HOUR - 1, "ann", Event.CLICK, "k-1")])
    assert await rollup(shard_dsn, BASE_HOUR - 1) == (1, 0, frozenset({"ann"}))


SCHEMA_3_REACTIONS = """
DROP TABLE reactions;
CREATE TABLE reactions (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts        bigint   NOT NULL CHECK (ts >= 0),
    hour      bigint   NOT NULL,
    username  text     NOT NULL,
    event     smallint NOT NULL CHECK (event IN (1, 2)),
    idem_key  text
);
CREATE UNIQUE INDEX reactions_user_idem_key ON reactions (username, idem_key) WHERE idem_key IS NOT NULL;
UPDATE schema_info SET version = 3;
"""


async def test_migration_from_the_unpartitioned_table_keeps_every_row(shard_dsn: str) -> None:
    conn = await asyncpg.connect(shard_dsn)
    try:
        await conn.execute(SCHEMA_3_REACTIONS)
        await conn.execute(
            "INSERT INTO reactions (ts, hour, username, event, idem_key) "
            "SELECT h * 3600000 + 1, h, 'u' || h, 1 + (h % 2)::smallint, CASE WHEN h % 3 = 0 THEN 'k' || h END "
            "FROM generate_series($1::bigint - 100, $1::bigint) h", BASE_HOUR)
        before = await conn.fetch("SELECT * FROM reactions ORDER BY id")

        await migrate(conn)

        assert await conn.fetchval("SELECT relkind FROM pg_class WHERE relname = 'reactions'") == b"p"
        assert await conn.fetch("SELECT * FROM reactions ORDER BY id") == before
        assert await conn.fetchval("SELECT version FROM schema_info") == SCHEMA_VERSION
        days = await partitions.existing_days(conn)
        assert days == {partitions.day_of_hour(h) for h in range(BASE_HOUR - 100, BASE_HOUR + 1)}
        new_id = await conn.fetchval("INSERT INTO reactions (ts, hour, username, event) "
                                     "VALUES ($1, $2, 'new', 1) RETURNING id", ts_in(BASE_HOUR), BASE_HOUR)
        assert new_id > before[-1]["id"]
    finally:
        await conn.close()
    # The idempotency keys carried over still deduplicate a retry.
    keyed = next(r for r in before if r["idem_key"] is not None)
    await commit(shard_dsn, [Reaction(keyed["ts"], keyed["hour"], keyed["username"], Event(keyed["event"]),
                                      keyed["idem_key"])])
    assert await fetchval(shard_dsn, "SELECT count(*) FROM reactions WHERE idem_key = $1", keyed["idem_key"]) == 1
