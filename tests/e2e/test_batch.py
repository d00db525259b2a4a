"""POST /analytics/batch end to end: real nginx, writers following the shard file, one PostgreSQL per shard.

Validation, limits, key reuse and the per-part records on one writer: tests/writer/test_batch.py.
"""

from __future__ import annotations

import io
import time
import uuid
from urllib.parse import quote

import aiohttp
import asyncpg

from sharding.local.cluster import LocalCluster
from sharding.placement import placement_key
from tests.e2e.test_cluster import ring_of
from tests.support.cluster import (
    base_url,
    own_past_hour_ts,
    post,
    shards_holding,
    topology,
    unique_users,
    wait_counts,
)
from tests.support.freeze import frozen
from tests.waiting import wait_until

# nginx answers every request within 3 s (README, Invariants 6); the margin is for a loaded machine.
ANSWER_BOUND_S = 3.0 + 1.0
# Usernames nginx would hash differently in other spellings.
AWKWARD = ["a,b", 'say "hi"', "a b", "x+y", "s/l", "é", "🏳️‍🌈", "100%"]


async def post_batch(session: aiohttp.ClientSession, base: str, body: str | io.BytesIO, key: str,
                     strict: bool = False) -> tuple[int, str, dict[str, str]]:
    headers = {"Content-Type": "text/csv", "Idempotency-Key": key}
    if strict:
        headers["X-Reactions-Placement"] = "strict"
    data = body.encode() if isinstance(body, str) else body
    async with session.post(f"{base}/analytics/batch", data=data, headers=headers) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


def csv_line(ts: int, user: str, event: str) -> str:
    return f'{ts},"{user.replace(chr(34), chr(34) * 2)}",{event}\n'


def expected_shards(cluster: LocalCluster, users: list[str]) -> dict[str, set[str]]:
    ring, owner = ring_of(cluster)
    return {u: {owner[ring.lookup(placement_key(u))]} for u in users}


async def test_each_event_lands_where_a_single_post_of_its_user_does(cluster: LocalCluster) -> None:
    base, ts, ts_single = base_url(cluster), own_past_hour_ts(), own_past_hour_ts()
    users = unique_users(40, "batch") + [f"{uuid.uuid4().hex[:6]}{name}" for name in AWKWARD]
    body = "timestamp,user,event\r\n" + "".join(csv_line(ts, u, "click") for u in users) \
        + "".join(csv_line(ts, u, "impression") for u in users[:10])
    key = f"k-{uuid.uuid4()}"
    async with aiohttp.ClientSession() as session:
        status, text, _ = await post_batch(session, base, body, key)
        assert (status, text) == (200, f"events,{len(users) + 10}\nstored,{len(users) + 10}\nalready_present,0\n")
        await wait_counts(session, base, ts, (len(users), len(users), 10))
        held = await shards_holding(cluster, users)
        assert held == expected_shards(cluster, users)
        assert len({s for shards in held.values() for s in shards}) == 3, "the batch was spread over every shard"
        # A single POST of each user, its name in the canonical encoding, lands on the same shard.
        for user in users:
            assert await post(session, f"{base}/analytics?timestamp={ts_single}&user={quote(user, safe='')}"
                                       f"&event=click") == 204
        await wait_counts(session, base, ts_single, (len(users), len(users), 0))
        assert await shards_holding(cluster, users) == held
    # Each shard recorded the (key, part) it committed: its own users' events, nothing else.
    for shard in topology(cluster).shards:
        mine = [u for u in users if held[u] == {shard.name}]
        conn = await asyncpg.connect(shard.dsn)
        try:
            rows = await conn.fetch("SELECT events FROM batch_parts WHERE idem_key = $1", key)
        finally:
            await conn.close()
        assert [r["events"] for r in rows] == [len(mine) + len([u for u in mine if u in users[:10]])]


async def test_a_one_event_batch_equals_a_single_post(cluster: LocalCluster) -> None:
    base, ts_batch, ts_single = base_url(cluster), own_past_hour_ts(), own_past_hour_ts()
    [user] = unique_users(1, "one")
    async with aiohttp.ClientSession() as session:
        status, text, _ = await post_batch(session, base, f"{ts_batch},{user},impression\n", f"k-{uuid.uuid4()}")
        assert (status, text) == (200, "events,1\nstored,1\nalready_present,0\n")
        assert await post(session, f"{base}/analytics?timestamp={ts_single}&user={user}&impression") == 204
        await wait_counts(session, base, ts_batch, (1, 0, 1))
        await wait_counts(session, base, ts_single, (1, 0, 1))
    held = await shards_holding(cluster, [user])
    assert held == expected_shards(cluster, [user]) and len(held[user]) == 1


async def test_nginx_takes_bodies_up_to_its_limit_and_posts_only(cluster: LocalCluster) -> None:
    base, ts = base_url(cluster), own_past_hour_ts()
    users = unique_users(100, "sized")
    body = "".join(csv_line(ts, u, "click") for u in users)
    assert len(body) > 1024, "above the 1k every other location allows"
    async with aiohttp.ClientSession() as session:
        assert (await post_batch(session, base, body, f"k-{uuid.uuid4()}"))[0] == 200
        status, text, _ = await post_batch(session, base, io.BytesIO(b"x" * (1024 * 1024 + 1)), f"k-{uuid.uuid4()}")
        assert status == 413 and "too large" in text
        async with session.get(f"{base}/analytics/batch") as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "POST"
        async with session.post(f"{base}/_internal/batch-part", data=b"1,1,u,1\n") as resp:
            assert resp.status == 404, "nginx never exposes the writers' internal path"
        await wait_counts(session, base, ts, (100, 100, 0))


async def test_a_frozen_shard_strict_retries_end_exact(cluster: LocalCluster) -> None:
    """A strict batch during a freeze stores what it can and never moves the frozen shard's part; the retry after
    the thaw commits only that part. A non-strict batch meanwhile moves those users, as single POSTs do."""
    base, ts, ts_loose = base_url(cluster), own_past_hour_ts(), own_past_hour_ts()
    users = unique_users(60, "freeze")
    expected = expected_shards(cluster, users)
    victim = topology(cluster).shards[0]
    on_victim = [u for u in users if expected[u] == {victim.name}]
    assert on_victim and len(on_victim) < len(users)
    body = "".join(csv_line(ts, u, "click") for u in users)
    key = f"k-{uuid.uuid4()}"
    async with aiohttp.ClientSession() as session:
        with frozen(cluster.postgres(victim)):
            started = time.monotonic()
            status, text, headers = await post_batch(session, base, body, key, strict=True)
            assert time.monotonic() - started < ANSWER_BOUND_S
            assert status in (503, 504), text
            if status == 504:
                assert headers["X-Reactions-Outcome"] == "unknown" and "Retry-After" in headers
            # Once the victim's writer is out, a plain batch moves its users along the ring, as nginx would.
            loose = "".join(csv_line(ts_loose, u, "impression") for u in users)
            loose_key = f"k-{uuid.uuid4()}"
            answers: list[str] = []

            async def loose_stored() -> bool:
                status, text, _ = await post_batch(session, base, loose, loose_key)
                answers.append(text)
                return status == 200

            await wait_until(loose_stored, "a plain batch is stored while a shard is frozen", deadline_s=20)
        # After the thaw the strict batch's retry commits exactly what is missing.
        final: list[str] = []

        async def strict_stored() -> bool:
            status, text, _ = await post_batch(session, base, body, key, strict=True)
            final.append(text)
            return status == 200

        await wait_until(strict_stored, "the strict batch's retry is stored after the thaw", deadline_s=30)
        lines = dict(line.split(",") for line in final[-1].splitlines())
        assert int(lines["stored"]) + int(lines["already_present"]) == len(users)
        assert int(lines["stored"]) >= len(on_victim)
        await wait_counts(session, base, ts, (len(users), len(users), 0))
        await wait_counts(session, base, ts_loose, (len(users), 0, len(users)))
    # Strict placement: every click is on its user's ring shard, and nowhere else.
    conn_rows = {}
    for shard in topology(cluster).shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            conn_rows[shard.name] = {r["username"] for r in await conn.fetch(
                "SELECT username FROM reactions WHERE ts = $1 AND username = ANY($2)", ts, users)}
        finally:
            await conn.close()
    assert {u: {s for s, us in conn_rows.items() if u in us} for u in users} == expected
