"""The writer's HTTP contract against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.events import REJECTION_CODES, Event
from common.hours import MS_PER_HOUR, hour_of, now_ms
from tests.support.writer_db import WriterClient, rollup, stored_events


async def test_all_three_forms_commit_before_204(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client()
    ts = now_ms()
    for path, params in [
        ("/analytics", {"timestamp": str(ts), "user": "alice", "event": "click"}),
        ("/analytics", {"timestamp": str(ts), "user": "bob", "impression": ""}),
        (f"/analytics/{ts}/carol/click", {}),
    ]:
        resp = await client.post(path, params=params)
        assert resp.status == 204, await resp.text()
    # 204 was answered: the rows must already be committed and visible.
    assert await stored_events(shard_dsn) == [
        (ts, "alice", Event.CLICK),
        (ts, "bob", Event.IMPRESSION),
        (ts, "carol", Event.CLICK),
    ]
    assert await rollup(shard_dsn, hour_of(ts)) == (2, 1, frozenset({"alice", "bob", "carol"}))


@pytest.mark.parametrize(
    ("url", "reason", "code"),
    [
        ("/analytics?user=a&click", "timestamp is required", "missing_timestamp"),
        ("/analytics?timestamp=1&timestamp=2&user=a&click", "timestamp must be given once", "repeated_parameter"),
        ("/analytics?timestamp=12.5&user=a&click", "timestamp must be an integer number of milliseconds",
         "bad_timestamp"),
        ("/analytics?timestamp=-1&user=a&click", "timestamp must not be negative", "bad_timestamp"),
        ("/analytics?timestamp=99999999999999999999&user=a&click",
         "timestamp must be an integer number of milliseconds", "bad_timestamp"),
        ("/analytics?timestamp=1&click", "user is required", "missing_user"),
        ("/analytics?timestamp=1&user=&click", "user must not be empty", "bad_user"),
        ("/analytics?timestamp=1&user=" + "x" * 129 + "&click", "user must be at most 128 characters", "bad_user"),
        ("/analytics?timestamp=1&user=a%0Ab&click", "user must not contain control characters or surrogates",
         "bad_user"),
        ("/analytics?timestamp=1&user=a%C2%85b&click", "user must not contain control characters or surrogates",
         "bad_user"),
        ("/analytics?timestamp=1&user=%FF&click", "the URL must be UTF-8 once percent-decoded", "bad_encoding"),
        ("/analytics?timestamp=1&user=a&event=like", "event must be click or impression", "bad_event"),
        ("/analytics?timestamp=1&user=a&click&impression", "give exactly one event: click or impression",
         "bad_event"),
        ("/analytics?timestamp=1&user=a", "give exactly one event: click or impression", "bad_event"),
        ("/analytics?timestamp=1&user=a&click&colour=red", "unknown parameter: colour", "unknown_parameter"),
        ("/analytics?timestamp=1&user=a&click&id=", "idempotency key must be 1 to 128 printable characters",
         "bad_idempotency_key"),
        ("/analytics/x/a/click", "timestamp must be an integer number of milliseconds", "bad_timestamp"),
        ("/analytics/1/a/like", "event must be click or impression", "bad_event"),
        ("/analytics/1/a/click", "timestamp is before 2000: milliseconds since the epoch expected",
         "early_timestamp"),
        ("/analytics/99999999999999/a/click", "timestamp is in the future", "future_timestamp"),
    ],
)
async def test_bad_input_is_400_with_its_reason_code_and_stores_nothing(
    writer_client: WriterClient, shard_dsn: str, url: str, reason: str, code: str
) -> None:
    client = await writer_client()
    resp = await client.post(url)
    assert resp.status == 400
    assert resp.content_type == "text/plain"
    assert (await resp.text()) == reason + "\n"
    assert await stored_events(shard_dsn) == []
    rejected = rejections(await (await client.get("/metrics")).text())
    assert rejected[code] == 1, rejected
    assert sum(rejected.values()) == 1, rejected


def rejections(metrics_text: str) -> dict[str, float]:
    """``reactions_events_rejected_total`` by reason code, from a /metrics page."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "reactions_events_rejected":
            found.update({s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")})
    return found


async def test_usernames_are_stored_verbatim(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client()
    names = ["O'Brien", 'say "hi"', "a&b=c", "100% sure", "Zoë", "🙂👍", "'); DROP TABLE reactions; --", "x+y",
             "👨\u200d👩\u200d👧", "no\u00a0break", "soft\u00adhyphen", "\U0001fae8"]
    ts = now_ms()
    for name in names:
        resp = await client.post(f"/analytics?timestamp={ts}&user={quote(name, safe='')}&click")
        assert resp.status == 204
    for name in names[:3]:
        resp = await client.post(f"/analytics/{ts}/{quote(name, safe='')}/impression")
        assert resp.status == 204
    stored = [username for _, username, _ in await stored_events(shard_dsn)]
    assert stored == names + names[:3]


async def test_hour_boundaries(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client()
    hour = hour_of(now_ms()) - 3
    start = hour * MS_PER_HOUR
    for ts, user in [(start, "first"), (start + MS_PER_HOUR - 1, "last"), (start + MS_PER_HOUR, "next")]:
        assert (await client.post(f"/analytics/{ts}/{user}/click")).status == 204
    assert await rollup(shard_dsn, hour) == (2, 0, frozenset({"first", "last"}))
    assert await rollup(shard_dsn, hour + 1) == (1, 0, frozenset({"next"}))


async def test_concurrent_posts_land_exactly_once(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client()
    ts = now_ms()
    requests = [(f"user{i % 150}", "click" if i % 3 else "impression") for i in range(600)]
    answers = await asyncio.gather(*(client.post(f"/analytics/{ts}/{u}/{e}") for u, e in requests))
    assert [a.status for a in answers] == [204] * len(requests)
    expected_clicks = sum(1 for _, e in requests if e == "click")
    assert await rollup(shard_dsn, hour_of(ts)) == (
        expected_clicks,
        len(requests) - expected_clicks,
        frozenset(u for u, _ in requests),
    )
    assert len(await stored_events(shard_dsn)) == len(requests)


async def test_batches_group_many_requests(writer_client: WriterClient) -> None:
    client = await writer_client()
    ts = now_ms()
    answers = await asyncio.gather(*(client.post(f"/analytics/{ts}/u{i}/click") for i in range(300)))
    assert {a.status for a in answers} == {204}
    metrics = await (await client.get("/metrics")).text()
    batches = next(float(line.split()[1]) for line in metrics.splitlines() if line.startswith("reactions_batches_tot"))
    assert 1 <= batches < 300


async def test_batching_disabled_is_one_transaction_per_request(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client(batching=False)
    ts = now_ms()
    answers = await asyncio.gather(*(client.post(f"/analytics/{ts}/u{i % 7}/click") for i in range(50)))
    assert {a.status for a in answers} == {204}
    assert await rollup(shard_dsn, hour_of(ts)) == (50, 0, frozenset(f"u{i}" for i in range(7)))
    metrics = await (await client.get("/metrics")).text()
    assert "reactions_batches_total 50" in metrics


async def test_idempotency_key_counts_once(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client()
    ts = now_ms()
    for _ in range(3):
        assert (await client.post(f"/analytics/{ts}/dave/click", headers={"Idempotency-Key": "k-1"})).status == 204
        assert (await client.post(f"/analytics?timestamp={ts}&user=dave&click&id=k-2")).status == 204
    assert await rollup(shard_dsn, hour_of(ts)) == (2, 0, frozenset({"dave"}))


async def test_idempotency_keys_belong_to_their_user(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client()
    ts = now_ms()
    for user in ("erin", "frank"):
        assert (await client.post(f"/analytics/{ts}/{user}/click", headers={"Idempotency-Key": "same"})).status == 204
    assert await rollup(shard_dsn, hour_of(ts)) == (2, 0, frozenset({"erin", "frank"}))


async def test_keyed_batches_insert_in_one_order(shard_dsn: str) -> None:
    """Batches holding the same retried keys lock them in the same order, so they cannot deadlock."""
    import asyncpg

    from common.events import Reaction
    from common.partitions import day_of_hour, ensure_days
    from writer import db

    ts = now_ms()
    batch = [Reaction(ts, hour_of(ts), user, Event.CLICK, key) for user, key in [("b", "k2"), ("a", "k1"), ("a", "k0")]]
    conn = await asyncpg.connect(shard_dsn)
    try:
        await ensure_days(conn, [day_of_hour(hour_of(ts))])
        await db.commit_batch(conn, batch, hour_of(ts))
        stored = await conn.fetch("SELECT username, idem_key FROM reactions ORDER BY id")
    finally:
        await conn.close()
    assert [(r["username"], r["idem_key"]) for r in stored] == [("a", "k0"), ("a", "k1"), ("b", "k2")]


async def test_late_write_notifies_its_hour(writer_client: WriterClient, shard_dsn: str) -> None:
    import asyncpg

    from common.schema import LATE_WRITES_CHANNEL

    client = await writer_client()
    listener = await asyncpg.connect(shard_dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(LATE_WRITES_CHANNEL, lambda *args: heard.put_nowait(args[3]))
    try:
        late = now_ms() - 5 * MS_PER_HOUR
        assert (await client.post(f"/analytics/{now_ms()}/eve/click")).status == 204
        assert (await client.post(f"/analytics/{late}/eve/click")).status == 204
        assert await asyncio.wait_for(heard.get(), 10) == str(hour_of(late))
        assert heard.empty()
    finally:
        await listener.close()


async def test_wrong_method_and_unknown_path(writer_client: WriterClient) -> None:
    client = await writer_client()
    resp = await client.put("/analytics?timestamp=1&user=a&click")
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    assert (await client.post("/nothing")).status == 404


async def test_health_and_metrics(writer_client: WriterClient) -> None:
    client = await writer_client()
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    await client.post("/analytics?timestamp=1&user=a&event=nope")
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain; version=")
    text = await resp.text()
    assert rejections(text)["bad_event"] == 1
    assert set(rejections(text)) == set(REJECTION_CODES), "every code is a series from the start"
    for name in ("zz1", "zz2"):  # client-chosen names do not become label values
        await client.post(f"/analytics?timestamp=1&user=a&click&{name}=1")
    text = await (await client.get("/metrics")).text()
    assert rejections(text)["unknown_parameter"] == 2
    assert "zz1" not in text
    assert "# TYPE reactions_commit_seconds histogram" in text
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert name in text, name


async def test_writer_sessions_commit_durably_whatever_the_database_default(shard_dsn: str) -> None:
    import asyncpg

    from writer import db
    from writer.settings import Settings

    admin = await asyncpg.connect(shard_dsn)
    database = await admin.fetchval("SELECT current_database()")
    await admin.execute(f"ALTER DATABASE {database} SET synchronous_commit = off")
    try:
        pool = await db.open_pool(shard_dsn, min_size=1, max_size=1, bounds=Settings().bounds)
        try:
            for _ in range(2):  # the second time after a release to the pool
                async with pool.acquire() as conn:
                    assert await conn.fetchval("SHOW synchronous_commit") == "on"
        finally:
            await pool.close()
    finally:
        await admin.execute(f"ALTER DATABASE {database} RESET synchronous_commit")
        await admin.close()


async def test_the_path_form_unescapes_its_segments_as_the_query_form_does(writer_client: WriterClient,
                                                                           shard_dsn: str) -> None:
    client = await writer_client()
    ts = now_ms()
    for raw in ("a%2Fb", "100%25", "%C3%A9l%C3%A8ve"):
        resp = await client.post(f"/analytics/{ts}/{raw}/click")
        assert resp.status == 204, await resp.text()
    assert {user for _, user, _ in await stored_events(shard_dsn)} == {"a/b", "100%", "élève"}


async def test_an_expect_header_is_answered_as_aiohttps_router_answers_it(writer_client: WriterClient,
                                                                          shard_dsn: str) -> None:
    client = await writer_client()
    ts = now_ms()
    resp = await client.post(f"/analytics/{ts}/refused/click", headers={"Expect": "something-else"})
    assert resp.status == 417
    resp = await client.post(f"/analytics/{ts}/continued/click", expect100=True)
    assert resp.status == 204
    assert {user for _, user, _ in await stored_events(shard_dsn)} == {"continued"}
