"""A shard is a database, not a DSN: a replaced database is noticed, and one database is never summed twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from aggregator.keys import LIVE, PAST
from common.schema import migrate
from sharding.local.postgres import LocalPostgres
from tests.support.aggregator_app import (
    Clock,
    MakeAggregator,
    body,
    get_hour,
    sample,
    wait_for_body,
    wait_until,
    write,
)


async def replace_database(postgres: LocalPostgres, dsn: str, prepare: Callable[[str], Awaitable[None]]) -> None:
    """Put another database behind ``dsn`` (a new OID, a new schema UUID), made ready by ``prepare`` beforehand.

    The swap is a rename, so the aggregator never sees the new one empty (an
    empty hour would look like a version going backwards, a different check).
    """
    name = dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(postgres.dsn_for("postgres"))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}_new")
        await admin.execute(f"CREATE DATABASE {name}_new")
        new_dsn = f"{dsn}_new"
        conn = await asyncpg.connect(new_dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        await prepare(new_dsn)
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.execute(f"ALTER DATABASE {name}_new RENAME TO {name}")
    finally:
        await admin.close()


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def shard_listing(client: object) -> dict[str, dict[str, Any]]:
    resp = await client.get("/shards")  # type: ignore[attr-defined]
    assert resp.status == 200
    return {s["name"]: s for s in (await resp.json())["shards"]}


async def test_a_database_recreated_behind_the_same_dsn_is_read_afresh(
        postgres: LocalPostgres, shard_dsns: list[str], clock: Clock, make_aggregator: MakeAggregator) -> None:
    past = clock.hour - 2
    await write(shard_dsns[2], clock.hour, ["old"], clock.hour)
    await write(shard_dsns[2], past, ["gone"], clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns), live_max_lag_s=10.0)
    await wait_for_body(client, clock.hour, body(1, 1, 0))
    assert await get_hour(client, past) == (200, body(1, 1, 0))
    assert past in client.app[PAST]
    before = (await shard_listing(client))["s2"]["identity"]

    async def other_users(dsn: str) -> None:
        await write(dsn, clock.hour, ["new", "new2"], clock.hour)
        await write(dsn, past, ["other", "other2"], clock.hour)

    # The new database has the same versions (1) with other users: read "above the
    # version held", it would look unchanged (live) or equal (past). Only its identity tells.
    await replace_database(postgres, shard_dsns[2], other_users)
    await wait_for_body(client, clock.hour, body(2, 2, 0))
    await wait_for_body(client, past, body(2, 2, 0))
    assert sample(client, "reactions_past_invalidations_total", cause="version") >= 1
    after = (await shard_listing(client))["s2"]["identity"]
    assert before is not None and after is not None and before != after
    assert before["database_oid"] != after["database_oid"]


async def test_a_new_schema_uuid_after_a_restore_rebuilds_the_live_hour(
        shard_dsns: list[str], clock: Clock, make_aggregator: MakeAggregator) -> None:
    await write(shard_dsns[0], clock.hour, ["ann", "ben"], clock.hour)
    client = await make_aggregator(shard_dsns=tuple(shard_dsns))
    await wait_for_body(client, clock.hour, body(2, 2, 0))
    # A restore from an older backup: ben's row is not there, yet the version moves on.
    await execute(shard_dsns[0], "DELETE FROM hour_users WHERE username = 'ben';"
                                 "UPDATE hour_counts SET clicks = clicks - 1;"
                                 "UPDATE schema_info SET shard_uuid = gen_random_uuid()")
    await write(shard_dsns[0], clock.hour, ["cid"], clock.hour)

    async def cid_seen() -> bool:  # a refresh read the restored database (the body alone was 2, 2, 0 before)
        live = client.app[LIVE].hours.get(clock.hour)
        return live is not None and "cid" in live.users

    await wait_until(cid_seen, "a refresh after the restore")
    await wait_for_body(client, clock.hour, body(2, 2, 0))  # without a rebuild: 3 users (ben kept)


async def test_one_database_under_two_shard_names_is_never_summed(
        shard_dsns: list[str], clock: Clock, make_aggregator: MakeAggregator) -> None:
    await write(shard_dsns[0], clock.hour, ["ann"], clock.hour)
    await write(shard_dsns[0], clock.hour - 2, ["ann"], clock.hour)
    # Two spellings of one database: the shard file check cannot see it, the identity can.
    alias = shard_dsns[0].replace("127.0.0.1", "localhost")
    client = await make_aggregator(shard_dsns=(shard_dsns[0], alias, shard_dsns[1]))
    status, text = await get_hour(client, clock.hour)
    assert status == 503 and "same database" in text, text
    status, text = await get_hour(client, clock.hour - 2)
    assert status == 503 and "same database" in text, text
    listing = await shard_listing(client)
    assert "same database" in str(listing["s0"]["last_error"])
