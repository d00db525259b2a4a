"""A writer started before its database: it waits (each try bounded), not ready, its write port closed; never exits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from common.hours import now_ms
from sharding.local.postgres import LocalPostgres
from sharding.local.processes import free_port
from tests.support.readiness import answer, answers, is_ready, silent_server, tries_at_least
from tests.support.tmpdirs import world_traversable_tmpdir
from tests.support.writer_db import stored_events
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
# Short bounds, so that a test sees several tries: each try to connect, and the longest pause between two.
CONNECT_TIMEOUT_MS = 400
BACKOFF_MAX_MS = 200
# Starting PostgreSQL (initdb included) on a loaded two-core machine.
START_DEADLINE_S = 60.0


class Writer:
    """A real ``python -m writer.main`` on free ports (writes and admin), killed at the end if still running."""

    def __init__(self, dsn: str, log: Path) -> None:
        self.port, self.admin_port = free_port(), free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "REACTIONS_DSN": dsn, "REACTIONS_PORT": str(self.port),
               "REACTIONS_ADMIN_PORT": str(self.admin_port), "REACTIONS_CONNECT_TIMEOUT_MS": str(CONNECT_TIMEOUT_MS),
               "REACTIONS_CONNECT_BACKOFF_MAX_MS": str(BACKOFF_MAX_MS)}
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "writer.main"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT)
        self.base, self.admin = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.admin_port}"

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@contextlib.asynccontextmanager
async def writer(dsn: str, log: Path) -> AsyncIterator[Writer]:
    started = Writer(dsn, log)
    try:
        yield started
    finally:
        if started.running():
            started.proc.kill()
            started.proc.wait()


async def test_a_writer_started_before_its_database_waits_then_makes_the_schema_and_takes_writes() -> None:
    root = world_traversable_tmpdir("reactions-late-pg-")
    server = LocalPostgres(root / "pg", free_port())
    try:
        async with writer(server.dsn, root / "writer.log") as w:
            await wait_until(lambda: answers(f"{w.admin}/healthz"), "the admin port answers while it waits")
            await wait_until(lambda: tries_at_least(f"{w.admin}/readyz", 3), "the writer tries again and again", 20.0)
            status, text = await answer(f"{w.admin}/readyz") or (0, "")
            assert status == 503 and f"waiting for its database postgresql://postgres@127.0.0.1:{server.port}" in text
            assert "ConnectionRefusedError" in text or "OSError" in text, text
            assert await answer(f"{w.base}/healthz") is None, "the write port stays closed: nginx moves its users"
            assert (await answer(f"{w.admin}/healthz") or (0, ""))[0] == 200, "alive: an orchestrator leaves it running"
            assert "reactions_database_up 0.0" in (await answer(f"{w.admin}/metrics") or (0, ""))[1]
            assert w.running()
            await asyncio.to_thread(server.start)  # the database (and its "reactions" database) appears late
            await wait_until(lambda: is_ready(f"{w.base}/readyz"), "the writer opens its port by itself",
                             START_DEADLINE_S)
            ts = now_ms()
            async with aiohttp.ClientSession() as session, \
                    session.post(f"{w.base}/analytics/{ts}/late/click") as resp:
                assert resp.status == 204
            assert [u for _, u, _ in await stored_events(server.dsn)] == ["late"], "the schema was made"
            assert "waiting for its database" in w.log.read_text()
            assert await asyncio.to_thread(w.stop) == 0
    finally:
        server.stop("immediate")


async def test_each_try_is_bounded_by_the_connect_timeout_and_sigterm_ends_the_wait(tmp_path: Path) -> None:
    """A database that accepts connections and never answers (a frozen server): every try ends at its bound."""
    async with silent_server() as port, \
            writer(f"postgresql://postgres@127.0.0.1:{port}/reactions", tmp_path / "writer.log") as w:
        # Without a bound per try, the first would never end. Each takes the timeout, plus a pause.
        per_try_s = (CONNECT_TIMEOUT_MS + BACKOFF_MAX_MS) / 1000
        await wait_until(lambda: answers(f"{w.admin}/healthz"), "the admin port answers while it waits")
        await wait_until(lambda: tries_at_least(f"{w.admin}/readyz", 4), "four tries, each ended by its bound",
                         10 * 4 * per_try_s)
        _, text = await answer(f"{w.admin}/readyz") or (0, "")
        assert "TimeoutError" in text, text
        assert await answer(f"{w.base}/healthz") is None
        assert w.running()
        assert await asyncio.to_thread(w.stop) == 0, "SIGTERM while waiting: a clean exit"
