"""The settle bound on the writer (README, Invariants 8): a write past its deadline is never stored.

The deadline is nginx's stamp + settle − staleness − skew margin; the writer
refuses a write past it unsent, and PostgreSQL's commit guard rolls back a
transaction that would commit past it. Late delivery on a real link is forced
by tests/faults/test_late_delivery.py.
"""

from __future__ import annotations

import math
import re
import time

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common import partitions
from common.events import Event, Reaction
from common.hours import hour_of, now_ms
from common.pg import HeldConnections, WaitBounds
from common.schema import LATE_COMMIT_SQLSTATE, SCHEMA_VERSION, migrate
from tests.support.shard_db import fetchval
from tests.support.writer_db import WriterClient, stored_events
from writer import db, settle
from writer.batcher import TooLate
from writer.settings import Settings

BOUNDS = WaitBounds(acquire_s=2.0, statement_s=5.0)


def test_the_budget_is_settle_less_staleness_less_the_skew_margin() -> None:
    assert Settings().write_budget_s == pytest.approx(5.0 - 2.0 - 0.5)
    assert Settings(settle_s=10.0, staleness_s=2.0, clock_skew_margin_s=1.0).write_budget_s == pytest.approx(7.0)


def test_the_deadline_counts_from_the_stamp_never_later_than_the_arrival() -> None:
    assert settle.write_deadline(100.0, 100.2, 2.5) == pytest.approx(102.5)
    assert settle.write_deadline(None, 100.2, 2.5) == pytest.approx(102.7)  # reached directly: from its arrival
    assert settle.write_deadline(200.0, 100.2, 2.5) == pytest.approx(102.7)  # a stamp from the future gains nothing


@pytest.mark.parametrize(("header", "stamp"), [("1764320400.123", 1764320400.123), (None, None), ("", None),
                                               ("soon", None), ("nan", None), ("-5", None)])
def test_the_stamp_is_nginx_msec(header: str | None, stamp: float | None) -> None:
    assert settle.parse_stamp(header) == stamp


def test_the_skew_to_nginx_is_the_fastest_request_of_the_window() -> None:
    clocks = settle.Clocks(margin_s=0.5)
    assert math.isnan(clocks.seconds("nginx"))
    for sample in (0.010, 0.004, 9.0):  # 9 s: a request held on the way, not a skew
        clocks.observe("nginx", sample)
    assert clocks.seconds("nginx") == pytest.approx(0.004)
    assert clocks.off == []
    clocks.observe("postgres", -0.8, estimate=True)
    assert clocks.off == ["postgres"]
    assert "OFF by more than the 0.5 s margin (postgres)" in clocks.report()
    clocks.observe("postgres", 0.001, estimate=True)
    assert clocks.off == []


async def commit(dsn: str, batch: list[Reaction], deadline: float) -> None:
    pool = await db.open_pool(dsn, min_size=1, max_size=2, bounds=BOUNDS)
    held = HeldConnections(pool, BOUNDS)
    try:
        await db.commit_bounded(held, BOUNDS, batch, hour_of(now_ms()), deadline)
    finally:
        await held.close()
        await pool.close()


def clicks(users: int) -> list[Reaction]:
    ts = now_ms()
    return [Reaction(ts=ts, hour=hour_of(ts), username=f"guard-{i}", event=Event.CLICK) for i in range(users)]


async def test_postgresql_rolls_back_a_batch_past_its_deadline(shard_dsn: str) -> None:
    with pytest.raises(TooLate) as refused:
        await commit(shard_dsn, clicks(3), time.time() - 0.001)
    assert refused.value.where == "database"
    assert await stored_events(shard_dsn) == []
    await commit(shard_dsn, clicks(3), time.time() + 5.0)
    assert len(await stored_events(shard_dsn)) == 3
    assert await fetchval(shard_dsn, "SELECT count(*) FROM commit_guard") == 0  # each guard row removes itself


async def test_the_guard_fires_once_per_transaction_not_per_row(shard_dsn: str) -> None:
    conn = await asyncpg.connect(shard_dsn)
    try:
        await conn.execute("SET track_functions = 'pl'")
        batch = clicks(50)
        await partitions.ensure_days(conn, {partitions.day_of_hour(batch[0].hour)})
        await db.commit_batch(conn, batch, hour_of(now_ms()), time.time() + 5.0)
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.execute("SELECT 1")  # flushes this session's function statistics
        calls = await conn.fetchval("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions"
                                    " WHERE funcname = 'reactions_commit_guard'")
    finally:
        await conn.close()
    assert calls == 1
    assert len(await stored_events(shard_dsn)) == 50


async def test_guard_commit_holds_any_write_transaction_to_its_deadline(shard_dsn: str) -> None:
    """The rule the other write paths call inside their own transaction."""
    conn = await asyncpg.connect(shard_dsn)
    try:
        with pytest.raises(RuntimeError, match="open transaction"):
            await db.guard_commit(conn, time.time() + 5.0)
        with pytest.raises(asyncpg.PostgresError) as refused:
            async with conn.transaction():
                await db.guard_commit(conn, time.time() + 0.05)
                await conn.execute("INSERT INTO raw_pruned (day, pruned_at) VALUES (1, now())")
                await conn.execute("SELECT pg_sleep(0.1)")  # the commit now comes past the deadline
        assert refused.value.sqlstate == LATE_COMMIT_SQLSTATE
        assert await conn.fetchval("SELECT count(*) FROM raw_pruned WHERE day = 1") == 0
    finally:
        await conn.close()


def late_total(text: str, where: str) -> float:
    family = next(f for f in text_string_to_metric_families(text) if f.name == "reactions_events_late")
    return next(s.value for s in family.samples if s.name.endswith("_total") and s.labels["where"] == where)


async def test_a_write_stamped_too_long_ago_is_refused_unsent(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client()
    stale_stamp = f"{time.time() - 2.6:.3f}"  # past the 2.5 s budget
    resp = await client.post(f"/analytics/{now_ms()}/late/click", headers={settle.STAMP_HEADER: stale_stamp})
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert "past its deadline" in await resp.text()
    assert "never be stored" in await resp.text()
    fresh = await client.post(f"/analytics/{now_ms()}/fresh/click", headers={settle.STAMP_HEADER: f"{time.time():.3f}"})
    direct = await client.post(f"/analytics/{now_ms()}/direct/click")  # no stamp: a writer reached directly
    assert (fresh.status, direct.status) == (204, 204)
    assert [user for _, user, _ in await stored_events(shard_dsn)] == ["fresh", "direct"]
    metrics = await (await client.get("/metrics")).text()
    assert late_total(metrics, "writer") == 1
    assert late_total(metrics, "database") == 0
    assert 'reactions_clock_skew_seconds{peer="nginx"}' in metrics


async def test_readyz_reports_the_skew_and_stays_ready_when_it_is_off(writer_client: WriterClient) -> None:
    client = await writer_client(clock_skew_margin_s=0.5)
    future = f"{time.time() + 3:.3f}"  # nginx's clock 3 s ahead of this writer's
    resp = await client.post(f"/analytics/{now_ms()}/skewed/click", headers={settle.STAMP_HEADER: future})
    assert resp.status == 204  # the arrival bounds the deadline: a clock ahead costs nothing
    ready = await client.get("/readyz")
    body = await ready.text()
    assert ready.status == 200, body
    assert body.startswith("ready\n")
    assert re.search(r"clock skew: nginx -(2\.9|3\.0)\d* s", body), body
    assert "OFF by more than the 0.5 s margin (nginx)" in body


async def test_a_shard_of_schema_4_gets_the_commit_guard(shard_dsn: str) -> None:
    conn = await asyncpg.connect(shard_dsn)
    try:
        await conn.execute("DROP TABLE commit_guard; DROP FUNCTION reactions_commit_guard();"
                           " UPDATE schema_info SET version = 4")
        await migrate(conn)
        assert await conn.fetchval("SELECT version FROM schema_info") == SCHEMA_VERSION
        await migrate(conn)  # again, as every writer does at start: nothing changes
        assert await conn.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname = 'commit_deadline'") == 1
    finally:
        await conn.close()
    with pytest.raises(TooLate):
        await commit(shard_dsn, clicks(1), time.time() - 0.001)
