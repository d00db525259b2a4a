"""A 204 only ever follows a commit: failed commits, overload and shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg

from common.hours import hour_of, now_ms
from sharding.local.postgres import LocalPostgres
from sharding.local.processes import free_port
from sharding.sockets import socket_path
from tests.support.shard_db import reset_database
from tests.support.tmpdirs import world_traversable_tmpdir
from tests.support.writer_db import WriterClient, rollup, stored_events
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
# How soon a writer must notice that its database cannot commit.
DETECTION_S = 2.0
# Bounds long enough for a test that holds a lock while it counts waiting requests.
PATIENT = {"commit_timeout_s": 30.0, "queue_wait_s": 30.0}


@asynccontextmanager
async def hour_counts_locked(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """Hold a lock that makes every commit of the writer wait."""
    conn = await asyncpg.connect(dsn)
    tx = conn.transaction()
    await tx.start()
    await conn.execute("LOCK TABLE hour_counts IN ACCESS EXCLUSIVE MODE")
    try:
        yield conn
    finally:
        await tx.rollback()
        await conn.close()


async def writers_waiting_on_lock(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reactions-writer'"
            " AND wait_event_type = 'Lock'"
        ))
    finally:
        await conn.close()


async def test_stopped_database_answers_503_then_recovers(
    writer_client: WriterClient, start_postgres: Callable[[], LocalPostgres]
) -> None:
    server = start_postgres()
    await reset_database(server.dsn)
    client = await writer_client(dsn=server.dsn)
    ts = now_ms()
    assert (await client.post(f"/analytics/{ts}/before/click")).status == 204
    server.stop()
    resp = await client.post(f"/analytics/{ts}/during/click")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"

    async def not_ready() -> bool:
        return (await client.get("/readyz")).status == 503

    # The heartbeat probe notices within its detection time (2 s, with a margin for a busy machine).
    await wait_until(not_ready, "the writer to report not ready", deadline_s=DETECTION_S + 1)
    refused = await client.post(f"/analytics/{ts}/refused/click")
    assert refused.status == 503, "answered at once while the database is down, never queued"
    server.start()

    async def accepted() -> bool:
        return (await client.post(f"/analytics/{ts}/after/click")).status == 204

    await wait_until(accepted, "the writer to recover")
    users = {u for _, u, _ in await stored_events(server.dsn)}
    assert "during" not in users and "refused" not in users
    assert {"before", "after"} <= users


async def test_commit_cut_midway_is_answered_unknown_and_a_keyed_retry_counts_once(
    writer_client: WriterClient, shard_dsn: str
) -> None:
    client = await writer_client()
    ts = now_ms()
    keyed = {"Idempotency-Key": "k1"}
    async with hour_counts_locked(shard_dsn) as locker:
        posts = [asyncio.ensure_future(client.post(f"/analytics/{ts}/u{i}/click", headers=keyed)) for i in range(20)]
        await wait_until(lambda: writers_waiting_on_lock(shard_dsn), "a commit to wait on the lock")
        await locker.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'reactions-writer'"
        )
        answers = await asyncio.gather(*posts)
    # The batch whose commit was sent: unknown (504, marked), never "not stored", never a 204. A batch
    # queued behind it may meet a connection the server already closed: refused unsent (a plain 503).
    unknown = [a for a in answers if a.status == 504]
    assert unknown and {a.status for a in answers} <= {503, 504}
    assert all(a.headers.get("X-Reactions-Outcome") == "unknown" for a in unknown)
    assert all("X-Reactions-Outcome" not in a.headers for a in answers if a.status == 503)
    assert "Idempotency-Key" in await unknown[0].text()
    assert await stored_events(shard_dsn) == []  # killed while it waited on the lock: rolled back

    async def retried() -> bool:
        statuses = [(await client.post(f"/analytics/{ts}/u{i}/click", headers=keyed)).status for i in range(20)]
        return statuses == [204] * 20

    await wait_until(retried, "keyed retries to be acknowledged once the database commits again")
    assert (await client.post(f"/analytics/{ts}/u0/click", headers=keyed)).status == 204
    assert await rollup(shard_dsn, hour_of(ts)) == (20, 0, frozenset(f"u{i}" for i in range(20)))


async def test_full_queue_answers_503_with_retry_after(writer_client: WriterClient, shard_dsn: str) -> None:
    client = await writer_client(queue_max_events=5, **PATIENT)
    ts = now_ms()
    async with hour_counts_locked(shard_dsn):
        first = [asyncio.ensure_future(client.post(f"/analytics/{ts}/u{i}/click")) for i in range(5)]
        await wait_until(lambda: writers_waiting_on_lock(shard_dsn), "a commit to wait on the lock")
        extra = await client.post(f"/analytics/{ts}/extra/click")
        assert extra.status == 503
        assert extra.headers["Retry-After"] == "1"
    assert [a.status for a in await asyncio.gather(*first)] == [204] * 5
    assert await rollup(shard_dsn, hour_of(ts)) == (5, 0, frozenset(f"u{i}" for i in range(5)))


@asynccontextmanager
async def writer_process(dsn: str, log_path: Path,
                         **extra_env: str) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """A real writer process on a free port, killed at the end if still running."""
    port = free_port()
    env = {**os.environ, "REACTIONS_DSN": dsn, "REACTIONS_PORT": str(port), "PYTHONPATH": str(ROOT),
           "REACTIONS_COMMIT_TIMEOUT_MS": "30000", "REACTIONS_QUEUE_WAIT_MS": "30000", **extra_env}
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "writer.main"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            await wait_until(lambda: answers(f"{base}/readyz"), "the writer to start")
            yield proc, base
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def answers(url: str) -> bool:
    """Whether a fresh connection to ``url`` gets a 200."""
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def test_sigterm_drains_the_open_batch(shard_dsn: str, tmp_path: Path) -> None:
    async with (
        writer_process(shard_dsn, tmp_path / "writer.log") as (proc, base),
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
    ):
        ts = now_ms()

        async def post(i: int) -> int:
            async with session.post(f"{base}/analytics/{ts}/u{i}/impression") as resp:
                return resp.status

        async def all_pending() -> bool:
            async with session.get(f"{base}/metrics") as resp:
                return "reactions_events_pending 200" in await resp.text()

        async with hour_counts_locked(shard_dsn):
            posts = [asyncio.ensure_future(post(i)) for i in range(200)]
            await wait_until(all_pending, "every request to reach the writer")
            proc.send_signal(signal.SIGTERM)
            # The writer stops accepting while its batch is still open.
            await wait_until(lambda: _refused(f"{base}/healthz"), "the writer to stop accepting")
        statuses = await asyncio.gather(*posts)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    assert statuses == [204] * 200
    assert await rollup(shard_dsn, hour_of(ts)) == (0, 200, frozenset(f"u{i}" for i in range(200)))


# A request on a connection the writer accepted just before it closed its
# listener is never answered until the writer exits: ask again on a new one.
REFUSED_PROBE_TIMEOUT_S = 1.0


async def _refused(url: str) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REFUSED_PROBE_TIMEOUT_S)) as session, \
                session.get(url):
            return False
    except aiohttp.ClientConnectionError:
        return True
    except TimeoutError:
        return False


async def test_a_writer_closes_its_port_while_its_database_is_down_and_its_admin_port_says_why(
        start_postgres: Callable[[], LocalPostgres], tmp_path: Path) -> None:
    server = start_postgres()
    await reset_database(server.dsn)
    admin = free_port()
    async with (
        writer_process(server.dsn, tmp_path / "writer.log", REACTIONS_ADMIN_PORT=str(admin)) as (_proc, base),
        aiohttp.ClientSession() as session,
    ):
        admin_base, ts = f"http://127.0.0.1:{admin}", now_ms()
        async with session.post(f"{base}/analytics/{ts}/before/click") as resp:
            assert resp.status == 204
        server.stop()
        # nginx's signal to move this shard's users: a refused connection, within the detection time.
        await wait_until(lambda: _refused(f"{base}/healthz"), "the writer to close its port", DETECTION_S + 1)
        async with session.get(f"{admin_base}/readyz") as resp:
            assert resp.status == 503 and "not ready" in await resp.text()
        async with session.get(f"{admin_base}/metrics") as resp:
            assert "reactions_database_up 0.0" in await resp.text()
        async with session.post(f"{admin_base}/analytics/{ts}/admin/click") as resp:
            assert resp.status in (404, 405), "the admin port takes no writes"
        server.start()
        await wait_until(lambda: answers(f"{base}/readyz"), "the writer to reopen its port by itself")
        async with session.post(f"{base}/analytics/{ts}/after/click") as resp:
            assert resp.status == 204
    assert {u for _, u, _ in await stored_events(server.dsn)} == {"before", "after"}


async def unix_status(path: str, method: str, url: str) -> int | None:
    """The status of one request on a fresh connection to the Unix socket ``path``; None if it cannot connect."""
    try:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session, \
                session.request(method, f"http://writer{url}") as resp:
            return resp.status
    except aiohttp.ClientConnectionError:
        return None


async def test_a_writer_socket_follows_its_port_closed_and_removed_while_its_database_is_down(
        start_postgres: Callable[[], LocalPostgres]) -> None:
    server = start_postgres()
    await reset_database(server.dsn)
    sockets = world_traversable_tmpdir("rx-sockets-")
    async with writer_process(server.dsn, sockets / "writer.log", REACTIONS_WRITER_SOCKETS=str(sockets)) as (proc,
                                                                                                            base):
        path = socket_path(str(sockets), base.removeprefix("http://"))

        async def socket_open() -> bool:
            # 0666: nginx's workers may run as another user.
            return await unix_status(path, "GET", "/readyz") == 200 and stat.S_IMODE(os.stat(path).st_mode) == 0o666

        ts = now_ms()
        await wait_until(socket_open, "the writer to open its socket")
        assert await unix_status(path, "POST", f"/analytics/{ts}/before/click") == 204
        server.stop()
        # nginx's signal to move this shard's users: no socket to connect to, within the detection time.
        await wait_until(lambda: not os.path.exists(path), "the writer to remove its socket", DETECTION_S + 1)
        assert await unix_status(path, "GET", "/healthz") is None
        assert await _refused(f"{base}/healthz"), "the port and the socket close together"
        server.start()
        await wait_until(socket_open, "the writer to reopen its socket by itself")
        assert await unix_status(path, "POST", f"/analytics/{ts}/after/click") == 204
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert not os.path.exists(path), "a stopped writer leaves no socket behind"
    assert {u for _, u, _ in await stored_events(server.dsn)} == {"before", "after"}
