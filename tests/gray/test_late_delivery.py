"""Late delivery, forced (README, Invariants 8): an event answered unknown settles within S of its answer.

A relay holds one request's bytes and delivers them HOLD_S later, the way TCP
retransmits what it kept once a partition heals: on the nginx→writer link
(shard b's writer behind GrayCluster.writer_relay) and on the writer→PostgreSQL
link (shard a's database behind GrayCluster.relay). Each test asserts that:

- the counts at the unknown answer + S equal those at a later point proven
  final: the relay said the late bytes were delivered and their connection
  closed, the refusal was seen (the writer's late metric, or PostgreSQL's
  error in the answer the relay read), and the staleness bound passed since;
- the event refused as late is never counted, in any answer or database;
- the events acknowledged before are all counted, untouched.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.settings import SETTLE_BOUND_S, STALENESS_BOUND_S
from sharding.local.processes import alive
from sharding.local.settings import ClusterSettings
from sharding.ring import Ring
from tests.support.cluster import TEST_ENV, base_url, counts, free_base_port, own_past_hour_ts, post, wait_counts
from tests.support.gray_cluster import RELAYED, WRITER_RELAYED, GrayCluster, gray_cluster
from tests.support.netns import require_netns
from tests.support.passwords import session_passfile
from tests.support.tmpdirs import world_traversable_tmpdir
from tests.waiting import wait_until

# How long the relay keeps the bytes: longer than every bound on the way
# (nginx gives up after 2.2 s, the writer's commit after 1 s), as a healed
# partition's retransmission is.
HOLD_S = 10.0
# The answer to the held request comes within nginx's 3 s bound; this leaves room on a loaded machine.
ANSWER_S = 3.0 + 2.0
# The relay reports the held bytes' answer at most 5 s after delivering them (tests/support/relay.py).
CLOSED_S = HOLD_S + 5.0 + 5.0
ACKED = 3
# PostgreSQL's ErrorResponse carries the SQLSTATE in a field of its own: 'C', the code, NUL.
LATE_COMMIT_FIELD = b"CRS001\x00"


@pytest.fixture(scope="module")
def cluster() -> Iterator[GrayCluster]:
    require_netns()
    settings = ClusterSettings(port=free_base_port(), shards=2, aggregators=1,
                               data_dir=world_traversable_tmpdir("reactions-late-") / "data",
                               service_env=TEST_ENV, passfile=session_passfile())
    with gray_cluster(settings) as made:
        yield made


def users_on(cluster: GrayCluster, shard: str, count: int) -> list[str]:
    """Users that nginx sends to ``shard`` (the ring as nginx is configured, relays included)."""
    topology = cluster.nginx_topology(cluster.running_topology())
    writers = {s.writers[0]: s.name for s in topology.active_shards}
    ring = Ring.build(writers)
    tag = uuid.uuid4().hex[:8]
    found = []
    for i in range(10_000):
        user = f"late-{tag}-{i}"
        if writers[ring.lookup(user)] == shard:
            found.append(user)
            if len(found) == count:
                return found
    raise AssertionError(f"no {count} users on shard {shard}")


def writer_address(cluster: GrayCluster, shard: str) -> str:
    return next(r.address for r in cluster.registry.all("writer") if r.shard == shard and alive(r))


async def late_refusals(session: aiohttp.ClientSession, address: str, where: str) -> float:
    async with session.get(f"http://{address}/metrics") as resp:
        text = await resp.text()
    family = next(f for f in text_string_to_metric_families(text) if f.name == "reactions_events_late")
    return next(s.value for s in family.samples if s.name.endswith("_total") and s.labels["where"] == where)


async def stored_anywhere(cluster: GrayCluster, user: str) -> int:
    total = 0
    for shard in cluster.running_topology().shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            total += await conn.fetchval("SELECT count(*) FROM reactions WHERE username = $1", user)
        finally:
            await conn.close()
    return total


async def unknown_answer(session: aiohttp.ClientSession, base: str, ts: int, user: str) -> float:
    """POST the event the relay holds; it must be answered unknown. Returns when (monotonic)."""
    async with session.post(f"{base}/analytics/{ts}/{user}/click",
                            timeout=aiohttp.ClientTimeout(total=ANSWER_S)) as resp:
        body = await resp.text()
        assert resp.status == 504 and resp.headers.get("X-Reactions-Outcome") == "unknown", (resp.status, body)
    return time.monotonic()


async def settled_counts(session: aiohttp.ClientSession, base: str, ts: int, answered: float) -> object:
    """The counts at the unknown answer + S (the settle bound), by an unmarked answer."""
    await asyncio.sleep(max(0.0, answered + SETTLE_BOUND_S - time.monotonic()))
    return await counts(session, base, ts)


async def acknowledged(session: aiohttp.ClientSession, base: str, ts: int, users: list[str]) -> None:
    for user in users:
        assert await post(session, f"{base}/analytics/{ts}/{user}/click") == 204


async def test_a_request_delivered_late_to_the_writer_is_never_counted(cluster: GrayCluster) -> None:
    relay = cluster.writer_relay
    assert relay is not None
    base, ts = base_url(cluster), own_past_hour_ts()
    *acked, late = users_on(cluster, WRITER_RELAYED, ACKED + 1)
    writer = writer_address(cluster, WRITER_RELAYED)
    async with aiohttp.ClientSession() as session:
        await acknowledged(session, base, ts, acked)
        await wait_counts(session, base, ts, (ACKED, ACKED, 0))
        refused_before = await late_refusals(session, writer, "writer")
        await asyncio.to_thread(relay.hold, HOLD_S, f"/{late}/".encode())
        answered = await unknown_answer(session, base, ts, late)
        await asyncio.to_thread(relay.held, 1.0)
        at_settle = await settled_counts(session, base, ts, answered)
        await asyncio.to_thread(relay.delivered, CLOSED_S)
        _, answer = await asyncio.to_thread(relay.closed, CLOSED_S)
        final_after = time.monotonic() + STALENESS_BOUND_S  # a commit at the delivery would show by then
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"past its deadline" in answer and b"Retry-After: 1" in answer, answer
        assert await late_refusals(session, writer, "writer") == refused_before + 1
        await asyncio.sleep(max(0.0, final_after - time.monotonic()))
        final = await counts(session, base, ts)
        skew = await skew_to_nginx(session, writer)
    assert at_settle == final == (ACKED, ACKED, 0), (at_settle, final)
    assert await stored_anywhere(cluster, late) == 0
    assert abs(skew) < 0.5, f"writer {writer}: skew to nginx {skew}s (nginx stamps every write it forwards)"


async def skew_to_nginx(session: aiohttp.ClientSession, address: str) -> float:
    async with session.get(f"http://{address}/metrics") as resp:
        text = await resp.text()
    family = next(f for f in text_string_to_metric_families(text) if f.name == "reactions_clock_skew_seconds")
    return next(s.value for s in family.samples if s.labels["peer"] == "nginx")


async def backend_of(dsn: str, client_port: int) -> int | None:
    """The pid of the PostgreSQL backend serving the connection from ``client_port``, if it is alive."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT pid FROM pg_stat_activity WHERE client_port = $1", client_port)
    finally:
        await conn.close()


async def test_a_commit_delivered_late_to_postgresql_is_rolled_back(cluster: GrayCluster) -> None:
    relay = cluster.relay
    assert relay is not None
    base, ts = base_url(cluster), own_past_hour_ts()
    *acked, late = users_on(cluster, RELAYED, ACKED + 1)
    direct = cluster.postgres(cluster.running_topology().shard(RELAYED)).dsn  # not through the relay
    async with aiohttp.ClientSession() as session:
        await acknowledged(session, base, ts, acked)
        await wait_counts(session, base, ts, (ACKED, ACKED, 0))
        await asyncio.to_thread(relay.hold, HOLD_S, late.encode())
        answered = await unknown_answer(session, base, ts, late)  # the writer's commit timed out: 504 unknown
        port = await asyncio.to_thread(relay.held, 1.0)
        at_settle = await settled_counts(session, base, ts, answered)
        backend = await backend_of(direct, port)
        assert backend is not None, "the held COMMIT's backend ended before its bytes came: the test proves nothing"
        assert await asyncio.to_thread(relay.delivered, CLOSED_S) == port
        closed_port, answer = await asyncio.to_thread(relay.closed, CLOSED_S)
        final_after = time.monotonic() + STALENESS_BOUND_S
        assert closed_port == port
        # The backend got the COMMIT and answered it: its commit guard refused it (and nothing else did).
        assert LATE_COMMIT_FIELD in answer, answer
        await asyncio.sleep(max(0.0, final_after - time.monotonic()))
        final = await counts(session, base, ts)
    assert at_settle == final == (ACKED, ACKED, 0), (at_settle, final)
    assert await stored_anywhere(cluster, late) == 0
    await wait_until(lambda: backend_gone(direct, backend), "the late COMMIT's backend ends with its connection")


async def backend_gone(dsn: str, pid: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await conn.close()
