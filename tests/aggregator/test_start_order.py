"""An aggregator started before its shard file: it waits (each try bounded), answers 503 meanwhile, never exits."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from common.hours import hour_of, now_ms
from sharding.config import Shard, Topology, save
from sharding.local.processes import free_port
from tests.support.aggregator_app import body, ts_in, write
from tests.support.readiness import answer, answers, is_ready, silent_server, tries_at_least, tries_reported
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
REFRESH_MS = 50
# Each try at the shard file's URL is bounded by the shard timeout.
SHARD_TIMEOUT_MS = 300
# Starting a Python process and reading three shards on a loaded two-core machine.
DEADLINE_S = 30.0


@contextlib.asynccontextmanager
async def aggregator(source: dict[str, str], log: Path) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """A real ``python -m aggregator.main`` on a free port, reading the shard file from ``source``."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REACTIONS_PORT": str(port), **source,
           "REACTIONS_REFRESH_INTERVAL_MS": str(REFRESH_MS), "REACTIONS_SHARD_TIMEOUT_MS": str(SHARD_TIMEOUT_MS)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "aggregator.main"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_until(lambda: answers(f"{base}/healthz"), "the aggregator answers /healthz", DEADLINE_S)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def topology(dsns: list[str]) -> Topology:
    return Topology(shards=tuple(Shard(name=f"s{i}", writers=(f"127.0.0.1:{i + 1}",), dsn=dsn)
                                 for i, dsn in enumerate(dsns)))


async def two_users_in(dsn: str) -> int:
    """Two clicks (alice, bob) in a past hour of one shard; the hour."""
    hour = hour_of(now_ms()) - 2
    await write(dsn, hour, ["alice", "bob"], hour + 2)
    return hour


def stopped_cleanly(proc: subprocess.Popen[bytes], log: Path) -> None:
    assert proc.poll() is None, f"the aggregator exited:\n{log.read_text()[-2000:]}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert "Unclosed client session" not in log.read_text() and "Traceback" not in log.read_text()


async def test_an_aggregator_waits_for_a_shard_file_written_late(shard_dsns: list[str], tmp_path: Path) -> None:
    hour, shards_file, log = await two_users_in(shard_dsns[0]), tmp_path / "shards.json", tmp_path / "agg.log"
    async with aggregator({"REACTIONS_SHARDS_FILE": str(shards_file)}, log) as (proc, base):
        await wait_until(lambda: tries_at_least(f"{base}/readyz", 3), "it looks for the file again and again")
        _, text = await answer(f"{base}/readyz") or (0, "")
        assert f"waiting for the shard file {shards_file}" in text and "no such shard file" in text, text
        status, _ = await answer(f"{base}/analytics?timestamp={ts_in(hour)}") or (0, "")
        assert status == 503, "no shard list: nothing is answered, zeros least of all"
        save(topology(shard_dsns), shards_file)
        await wait_until(lambda: is_ready(f"{base}/readyz"), "ready once the file is there", DEADLINE_S)
        assert await answer(f"{base}/analytics?timestamp={ts_in(hour)}") == (200, body(2, 2, 0))
        stopped_cleanly(proc, log)


async def test_an_aggregator_waits_for_the_shard_files_url_each_try_bounded(shard_dsns: list[str],
                                                                          tmp_path: Path) -> None:
    """First a server that accepts and never answers (each try must end by its bound), then the real file."""
    hour, log = await two_users_in(shard_dsns[0]), tmp_path / "agg.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}/shards.json"
    async with aggregator({"REACTIONS_SHARDS_URL": url}, log) as (proc, base):
        async with silent_server(port):
            await wait_until(lambda: says(f"{base}/readyz", "TimeoutError"), "a try at the silent server timed out")
            first = await tries_reported(f"{base}/readyz")
            per_try_s = (SHARD_TIMEOUT_MS + REFRESH_MS) / 1000
            await wait_until(lambda: tries_at_least(f"{base}/readyz", first + 3), "three more tries, each bounded",
                             10 * 3 * per_try_s)
            _, text = await answer(f"{base}/readyz") or (0, "")
            assert f"waiting for the shard file at {url}" in text, text
        async with serving(topology(shard_dsns), tmp_path / "served.json", port):
            await wait_until(lambda: is_ready(f"{base}/readyz"), "ready once the URL serves the file", DEADLINE_S)
            assert await answer(f"{base}/analytics?timestamp={ts_in(hour)}") == (200, body(2, 2, 0))
        stopped_cleanly(proc, log)


async def says(url: str, text: str) -> bool:
    found = await answer(url)
    return found is not None and text in found[1]


@contextlib.asynccontextmanager
async def serving(shards: Topology, path: Path, port: int) -> AsyncIterator[None]:
    """The shard file on http://127.0.0.1:PORT/shards.json, as the entry host's topology port serves it."""
    save(shards, path)

    async def shards_json(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/shards.json", shards_json)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield
    finally:
        await runner.cleanup()
