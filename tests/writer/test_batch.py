"""POST /analytics/batch on one writer and its real PostgreSQL (no shard file: every event stays on its shard).

Placement across shards, nginx and a frozen shard: tests/e2e/test_batch.py.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from common.batches import parse_batch
from common.hours import MS_PER_HOUR, hour_of, now_ms
from common.pg import WaitBounds
from sharding.config import parse, save
from tests.support.writer_db import WriterClient, rollup, stored_events
from tests.waiting import wait_until
from writer import db
from writer.batch_db import Part, PartCommitted, commit_part
from writer.batch_views import answer
from writer.batcher import NotStored, OutcomeUnknown, TooLate
from writer.batches import Outcome, PartResult, part_answer
from writer.part_wire import encode_part

HOUR = now_ms() // MS_PER_HOUR - 30  # a past hour: its day's partition is made on demand
TS = HOUR * MS_PER_HOUR + 1000


async def post_batch(client: TestClient, body: bytes | str, key: str | None = "k1",
                     headers: dict[str, str] | None = None) -> tuple[int, str]:
    all_headers = {"Content-Type": "text/csv", **(headers or {})}
    if key is not None:
        all_headers["Idempotency-Key"] = key
    data = body.encode() if isinstance(body, str) else body
    async with client.post("/analytics/batch", data=data, headers=all_headers) as resp:
        return resp.status, await resp.text()


def csv_of(events: list[tuple[int, str, str]]) -> str:
    return "".join(f"{ts},{user},{event}\n" for ts, user, event in events)


async def parts(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch("SELECT idem_key, part, records, events FROM batch_parts ORDER BY committed_at")
    finally:
        await conn.close()


async def test_a_batch_is_stored_with_its_rollups_and_answered_in_csv(writer_client: WriterClient,
                                                                      shard_dsn: str) -> None:
    client = await writer_client()
    events = [(TS + i, f"u{i % 3}", "click" if i % 2 else "impression") for i in range(10)]
    status, text = await post_batch(client, csv_of(events))
    assert (status, text) == (200, "events,10\nstored,10\nalready_present,0\n")
    assert sorted(await stored_events(shard_dsn)) == sorted((ts, u, 1 if e == "click" else 2) for ts, u, e in events)
    assert await rollup(shard_dsn, HOUR) == (5, 5, frozenset({"u0", "u1", "u2"}))
    [row] = await parts(shard_dsn)
    assert (row["idem_key"], row["events"]) == ("k1", 10)
    assert int.from_bytes(row["records"], "little") == (1 << 10) - 1  # records 1..10


async def test_quoting_crlf_bom_and_the_header(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client()
    body = ("\ufefftimestamp,user,event\r\n"
            f'{TS},"a,b",click\r\n'
            f'{TS},"say ""hi""",impression\r\n'
            f"{TS},plain,click\r\n").encode()
    status, text = await post_batch(client, body)
    assert (status, text) == (200, "events,3\nstored,3\nalready_present,0\n")
    assert {u for _, u, _ in await stored_events(shard_dsn)} == {"a,b", 'say "hi"', "plain"}


async def test_a_bad_record_is_a_400_naming_it_and_nothing_is_stored(writer_client: WriterClient,
                                                                     shard_dsn: str) -> None:
    client = await writer_client()
    good = f"timestamp,user,event\n{TS},ok,click\n"
    cases = {
        f'{TS},"line\nbreak",click\n': "record 2: user must not contain control characters",
        f"{TS},two-fields\n": "record 2: expected 3 fields",
        f"{TS},u,like\n": "record 2: event must be click or impression",
        "soon,u,click\n": "record 2: timestamp must be an integer",
        f"{now_ms() + 3600_000},u,click\n": "record 2: timestamp is in the future",
        f'{TS},"unterminated,click\n': "record 2: not valid CSV",
        f'{TS},"a"b,click\n': "record 2: not valid CSV",
        f"{TS},,click\n": "record 2: user must not be empty",
    }
    for bad, reason in cases.items():
        status, text = await post_batch(client, good + bad + f"{TS},after,click\n")
        assert status == 400 and text.startswith(reason), (bad, text)
    assert (await post_batch(client, b"\xff\xfe" + good.encode()))[0] == 400
    assert (await post_batch(client, ""))[0] == 400
    assert await stored_events(shard_dsn) == [] and await parts(shard_dsn) == []


async def test_the_key_is_required_and_the_body_must_be_csv(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client()
    body = csv_of([(TS, "u", "click")])
    status, text = await post_batch(client, body, key=None)
    assert status == 400 and "Idempotency-Key" in text
    assert (await post_batch(client, body, headers={"Content-Type": "application/json"}))[0] == 415
    assert (await post_batch(client, body, headers={"X-Reactions-Placement": "loose"}))[0] == 400
    async with client.get("/analytics/batch") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
    assert await stored_events(shard_dsn) == []


async def test_limits_are_a_413_and_nothing_is_stored(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client(batch_post_max_events=5, batch_post_max_bytes=400)
    assert (await post_batch(client, csv_of([(TS, f"u{i}", "click") for i in range(5)]), key="five"))[0] == 200
    status, text = await post_batch(client, csv_of([(TS, f"u{i}", "click") for i in range(6)]), key="six")
    assert status == 413 and "at most 5 events" in text
    status, text = await post_batch(client, f"{TS},{'x' * 400},click\n", key="big")
    assert status == 413 and "at most 400 bytes" in text
    assert len(await stored_events(shard_dsn)) == 5


async def test_a_retry_is_already_present_and_another_body_is_a_422(writer_client: WriterClient,
                                                                    shard_dsn: str) -> None:
    client = await writer_client()
    events = [(TS, f"u{i}", "click") for i in range(4)]
    assert (await post_batch(client, csv_of(events)))[1] == "events,4\nstored,4\nalready_present,0\n"
    # The same events, quoted, with CRLF and a header: the same body.
    same = "timestamp,user,event\r\n" + "".join(f'{ts},"{u}",{e}\r\n' for ts, u, e in events)
    assert await post_batch(client, same) == (200, "events,4\nstored,0\nalready_present,4\n")
    status, text = await post_batch(client, csv_of(events[:3]))
    assert status == 422 and "another batch" in text
    assert await rollup(shard_dsn, HOUR) == (4, 0, frozenset(f"u{i}" for i in range(4)))
    assert len(await parts(shard_dsn)) == 1
    # The key belongs to its body only: another key stores the same events again (at-least-once without it).
    assert (await post_batch(client, csv_of(events), key="k2"))[1] == "events,4\nstored,4\nalready_present,0\n"


async def test_a_retry_commits_only_the_records_an_earlier_part_did_not(writer_client: WriterClient,
                                                                        shard_dsn: str) -> None:
    """An earlier try committed records 1 and 3 here (placement then sent 2 and 4 elsewhere): only 2 and 4 now."""
    events = [(TS, f"u{i}", "click") for i in range(4)]
    batch = parse_batch(csv_of(events).encode(), now_ms(), 10)
    pool = await asyncpg.create_pool(shard_dsn, min_size=1, max_size=1)
    try:
        earlier = Part([1, 3], [TS, TS], [HOUR, HOUR], ["u0", "u2"], [1, 1])
        committed = await commit_part(pool, WaitBounds(1.0, 5.0), "k1", batch.digest, earlier, hour_of(now_ms()))
        assert (committed.stored, committed.already_present) == (2, 0)
    finally:
        await pool.close()
    client = await writer_client()
    assert await post_batch(client, csv_of(events)) == (200, "events,4\nstored,2\nalready_present,2\n")
    assert sorted(u for _, u, _ in await stored_events(shard_dsn)) == ["u0", "u1", "u2", "u3"]
    assert [r["events"] for r in await parts(shard_dsn)] == [2, 2]
    assert await rollup(shard_dsn, HOUR) == (4, 0, frozenset(f"u{i}" for i in range(4)))


async def test_users_carry_their_hours_version(writer_client: WriterClient, shard_dsn: str) -> None:
    """Each part bumps each hour it touches once; its new users get that version, old users keep theirs."""
    client = await writer_client()
    other = TS + MS_PER_HOUR
    assert (await post_batch(client, csv_of([(TS, "a", "click"), (TS, "b", "click")]), key="one"))[0] == 200
    assert (await post_batch(client, csv_of([(TS, "a", "click"), (TS, "c", "impression"),
                                            (other, "c", "click")]), key="two"))[0] == 200
    conn = await asyncpg.connect(shard_dsn)
    try:
        versions = {(r["hour"], r["username"]): r["version"]
                    for r in await conn.fetch("SELECT hour, username, version FROM hour_users")}
        counts = {r["hour"]: tuple(r[1:]) for r in await conn.fetch(
            "SELECT hour, clicks, impressions, version FROM hour_counts")}
    finally:
        await conn.close()
    assert versions == {(HOUR, "a"): 1, (HOUR, "b"): 1, (HOUR, "c"): 2, (HOUR + 1, "c"): 1}
    assert counts == {HOUR: (3, 1, 2), HOUR + 1: (1, 0, 1)}


async def test_the_upkeep_prunes_batch_records_past_their_own_retention(writer_client: WriterClient,
                                                                        shard_dsn: str) -> None:
    client = await writer_client()
    for key in ("old", "new"):
        assert (await post_batch(client, csv_of([(TS, "u", "click")]), key=key))[0] == 200
    conn = await asyncpg.connect(shard_dsn)
    try:
        await conn.execute("UPDATE batch_parts SET committed_at = now() - interval '8 days' WHERE idem_key = 'old'")
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(shard_dsn, min_size=1, max_size=1)
    try:
        await db.maintain_partitions(pool, WaitBounds(1.0, 30.0), hour_of(now_ms()) // 24, 10_000,
                                     batch_key_retention_days=7)
    finally:
        await pool.close()
    assert [r["idem_key"] for r in await parts(shard_dsn)] == ["new"]
    assert len(await stored_events(shard_dsn)) == 2, "the raw log keeps its own retention"


def test_the_answer_keeps_the_outcomes_apart() -> None:
    done = PartResult("", 3, Outcome.COMMITTED, PartCommitted(2, 1))
    present = PartResult("127.0.0.1:1", 2, Outcome.COMMITTED, PartCommitted(0, 2))
    refused = PartResult("127.0.0.1:2", 4, Outcome.NOT_STORED, reason="database down")
    doubt = PartResult("127.0.0.1:3", 5, Outcome.UNKNOWN, reason="no answer")
    reused = PartResult("127.0.0.1:3", 5, Outcome.KEY_REUSED, reason="another batch")
    assert answer(5, [done, present]).text == "events,5\nstored,2\nalready_present,3\n"
    cases: list[tuple[list[PartResult], int]] = [
        ([present, refused], 503), ([refused], 503), ([done, refused], 504), ([present, doubt], 504),
        ([doubt], 504), ([done, reused], 422),
    ]
    for results, status in cases:
        try:
            answer(sum(r.events for r in results), results)
        except web.HTTPException as exc:
            assert exc.status == status, (results, exc.text)
            assert (exc.headers.get("X-Reactions-Outcome") == "unknown") == (status == 504)
            assert ("Retry-After" in exc.headers) == (status in (503, 504))
        else:
            raise AssertionError(f"{results} answered 200")


async def test_a_batch_past_its_deadline_is_refused_and_a_late_part_rolled_back(writer_client: WriterClient,
                                                                                shard_dsn: str) -> None:
    """The settle bound (docs/design.md, Invariants 8): nginx's stamp long past, nothing stored.

    A part whose commit would come past its deadline is rolled back by PostgreSQL's commit guard."""
    client = await writer_client()
    body = csv_of([(TS, "u", "click")])
    status, text = await post_batch(client, body, headers={"X-Reactions-Sent": f"{time.time() - 60:.3f}"})
    assert status == 503 and "deadline" in text
    batch = parse_batch(body.encode(), now_ms(), 10)
    pool = await asyncpg.create_pool(shard_dsn, min_size=1, max_size=1)
    try:
        with pytest.raises(TooLate) as refused:
            await commit_part(pool, WaitBounds(1.0, 5.0), "k1", batch.digest, Part([1], [TS], [HOUR], ["u"], [1]),
                              hour_of(now_ms()), deadline=time.time() - 0.001)
        assert refused.value.where == "database"
    finally:
        await pool.close()
    assert await stored_events(shard_dsn) == [] and await parts(shard_dsn) == []
    assert await post_batch(client, body) == (200, "events,1\nstored,1\nalready_present,0\n")


async def test_the_guard_holds_a_part_in_both_its_forms(shard_dsn: str) -> None:
    """In the rollups' statement (records to write) and on its own (every record already there)."""
    digest = parse_batch(csv_of([(TS, "u", "click")]).encode(), now_ms(), 10).digest
    part = Part([1], [TS], [HOUR], ["u"], [1])
    pool = await asyncpg.create_pool(shard_dsn, min_size=1, max_size=1)
    try:
        committed = await commit_part(pool, WaitBounds(1.0, 5.0), "kg", digest, part, hour_of(now_ms()),
                                      deadline=time.time() + 30)
        assert committed == PartCommitted(stored=1, already_present=0)
        with pytest.raises(TooLate):
            await commit_part(pool, WaitBounds(1.0, 5.0), "kg", digest, part, hour_of(now_ms()),
                              deadline=time.time() - 0.001)
        again = await commit_part(pool, WaitBounds(1.0, 5.0), "kg", digest, part, hour_of(now_ms()),
                                  deadline=time.time() + 30)
        assert again == PartCommitted(stored=0, already_present=1)
    finally:
        await pool.close()
    assert len(await stored_events(shard_dsn)) == 1


async def test_a_writer_that_cannot_read_its_shard_file_refuses_batches_until_it_can(
        writer_client: WriterClient, shard_dsn: str, tmp_path: Path) -> None:
    shards_file = tmp_path / "shards.json"
    client = await writer_client(shards_file=str(shards_file), topology_poll_s=0.05)
    body = csv_of([(TS, "u", "click")])
    status, text = await post_batch(client, body)
    assert status == 503 and "topology has not been read" in text
    async with client.post(f"/analytics?timestamp={TS}&user=single&event=click") as resp:
        assert resp.status == 204, "single POSTs need no topology"
    async with client.get("/readyz") as resp:
        text = await resp.text()
        assert resp.status == 200 and "batches: waiting for the shard file" in text, text
    save(parse({"shards": [{"name": "a", "writers": ["127.0.0.1:1"], "dsn": shard_dsn}]}), shards_file)

    async def stored() -> bool:
        return (await post_batch(client, body))[0] == 200

    await wait_until(stored, "the batch is stored once the shard file is read", deadline_s=10)
    assert sorted(u for _, u, _ in await stored_events(shard_dsn)) == ["single", "u"]


async def test_the_internal_part_path_commits_a_part_once(writer_client: WriterClient, shard_dsn: str) -> None:
    """What another writer sends (writer/part_wire.py): checked again, committed here, a retry already present."""
    client = await writer_client()
    batch = parse_batch(csv_of([(TS, "x", "click"), (TS, "y", "impression")]).encode(), now_ms(), 10)
    headers = {"Idempotency-Key": "kp", "X-Reactions-Batch-Digest": batch.digest.hex(), "Content-Type": "text/csv"}
    part = f"2,{TS},y,2\n".encode()
    for expected in ("stored,1\nalready_present,0\n", "stored,0\nalready_present,1\n"):
        async with client.post("/_internal/batch-part", data=part, headers=headers) as resp:
            assert (resp.status, await resp.text()) == (200, expected)
    for bad_headers, bad_part in [({**headers, "X-Reactions-Batch-Digest": "zz"}, part),
                                  (headers, f"0,{TS},y,2\n".encode()), (headers, f"3,{TS},y,7\n".encode()),
                                  (headers, f'3,{TS},"a\nb",1\n'.encode()), (headers, b"")]:
        async with client.post("/_internal/batch-part", data=bad_part, headers=bad_headers) as resp:
            assert resp.status == 400, bad_part
    assert await stored_events(shard_dsn) == [(TS, "y", 2)]
    [row] = await parts(shard_dsn)
    assert int.from_bytes(row["records"], "little") == 0b10  # record 2 only


async def test_strict_placement_without_a_topology_is_refused(writer_client: WriterClient, shard_dsn: str) -> None:
    """A writer with no shard file cannot know each user's ring shard: a strict batch stores nothing (503)."""
    client = await writer_client()
    status, text = await post_batch(client, csv_of([(TS, "u", "click")]), headers={"X-Reactions-Placement": "strict"})
    assert status == 503 and "strict placement needs the topology" in text, text
    assert await stored_events(shard_dsn) == []
    assert (await post_batch(client, csv_of([(TS, "u", "click")])))[0] == 200, "without strict, it stays here"


async def test_a_part_of_a_batch_within_the_limits_is_within_the_parts_limit(writer_client: WriterClient,
                                                                             shard_dsn: str) -> None:
    """A forwarded part adds each event's record number: a batch just under 1 MiB must not fail on its way."""
    client = await writer_client()
    user = "u" * 83
    body = csv_of([(TS, user, "click")] * 10_000).encode()
    batch = parse_batch(body, now_ms(), 10_000)
    assert len(body) <= 1024 * 1024
    wire = encode_part(Part(list(range(1, 10_001)), [TS] * 10_000, [HOUR] * 10_000, [user] * 10_000, [1] * 10_000))
    assert len(wire) > 1024 * 1024, "the part is longer than its batch: the case this test is about"
    headers = {"Idempotency-Key": "kbig", "X-Reactions-Batch-Digest": batch.digest.hex(), "Content-Type": "text/csv"}
    async with client.post("/_internal/batch-part", data=io.BytesIO(wire), headers=headers) as resp:
        assert (resp.status, await resp.text()) == (200, "stored,10000\nalready_present,0\n")


def test_another_writers_refusal_is_not_stored_and_only_a_lost_answer_is_unknown() -> None:
    assert part_answer("w", 200, "stored,2\nalready_present,1\n") == PartCommitted(2, 1)
    for status in (400, 404, 408, 413, 503):  # never taken, or rolled back: a retry cannot count it twice
        with pytest.raises(NotStored):
            part_answer("w", status, "no")
    for status in (500, 502, 504):
        with pytest.raises(OutcomeUnknown):
            part_answer("w", status, "no")
