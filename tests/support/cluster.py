"""A real local cluster (PostgreSQL per shard, writers, aggregators, nginx) and ways to talk to it.

The cluster is started by sharding/local/cluster.py exactly as ``make run`` does,
on ports derived from a free base port, in a temporary DATA_DIR. Used by the
end-to-end and fault tests; their conftest modules hold only the fixtures.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
from yarl import URL

from common.hours import MS_PER_HOUR, now_ms
from sharding.config import Topology, load
from sharding.local.cluster import LocalCluster
from sharding.local.processes import port_is_free
from sharding.local.settings import PORT_SPAN, ClusterSettings
from tests.support.passwords import session_passfile
from tests.support.shard_db import fetchval
from tests.support.tmpdirs import world_traversable_tmpdir

# Long enough for a loaded CI machine, short enough that a broken path fails fast.
DEADLINE_S = 20.0
# The audit load writes late events to hours up to 23 years back (tests/faults/scenario.py)
# and finds every acknowledged event by its raw row: the writers of test clusters keep
# raw events longer than that (retention itself is tested on its own: tests/writer,
# tests/common, tests/e2e/test_lifecycle.py).
AUDIT_RETENTION_DAYS = "10000"
# The aggregators refresh the live hour this often in tests (750 ms in production).
TEST_ENV = {"REACTIONS_REFRESH_INTERVAL_MS": "50", "REACTIONS_RAW_RETENTION_DAYS": AUDIT_RETENTION_DAYS}
REPO_ROOT = Path(__file__).resolve().parents[2]


# Below Linux's ephemeral range (32768 and up), where the kernel picks ports for
# outgoing connections and for other tests' free_port(): a port found free
# here stays free until our server binds it.
BASE_PORT_RANGE = (10_000, 32_768 - PORT_SPAN)


def free_base_port() -> int:
    """A PORT whose own port is free and whose internal range fits below the ephemeral ports."""
    for _ in range(200):
        port = random.randrange(*BASE_PORT_RANGE)
        if port_is_free(port):
            return port
    raise RuntimeError("no free base port")


def start_cluster(shards: int, aggregators: int, env: dict[str, str] | None = None,
                  writer_sockets: bool = False) -> Iterator[LocalCluster]:
    """Start a cluster in a temporary DATA_DIR, yield it, stop it: the body of a fixture (``env`` over TEST_ENV)."""
    settings = ClusterSettings(port=free_base_port(), shards=shards, aggregators=aggregators,
                               data_dir=world_traversable_tmpdir("reactions-e2e-") / "data",
                               service_env={**TEST_ENV, **(env or {})},
                               passfile=session_passfile(), writer_sockets=writer_sockets)
    cluster = LocalCluster(settings)
    cluster.acquire_run_lock()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.release_run_lock()


def base_url(cluster: LocalCluster) -> str:
    return f"http://127.0.0.1:{cluster.settings.port}"


def topology(cluster: LocalCluster) -> Topology:
    return load(cluster.shards_file)


def unique_users(count: int, prefix: str = "u") -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"{prefix}-{tag}-{i}" for i in range(count)]


def own_past_hour_ts() -> int:
    """A timestamp in a past hour that no other test uses (so its counts start at zero)."""
    return (now_ms() // MS_PER_HOUR - random.randrange(48, 200_000)) * MS_PER_HOUR + random.randrange(MS_PER_HOUR)


async def post(session: aiohttp.ClientSession, url: str) -> int:
    """POST exactly this URL (not re-quoted) and return the status."""
    async with session.post(URL(url, encoded=True)) as resp:
        await resp.read()
        return resp.status


async def counts(session: aiohttp.ClientSession, base: str, ts: int) -> tuple[int, int, int] | None:
    async with session.get(f"{base}/analytics?timestamp={ts}") as resp:
        if resp.status != 200:
            return None
        lines = dict(line.split(",") for line in (await resp.text()).splitlines())
        return int(lines["unique_users"]), int(lines["clicks"]), int(lines["impressions"])


async def wait_counts(session: aiohttp.ClientSession, base: str, ts: int, expected: tuple[int, int, int]) -> None:
    """Poll GET until it answers ``expected``; fail with the last answer past the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    seen = None
    while time.monotonic() < deadline:
        seen = await counts(session, base, ts)
        if seen == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"GET for {ts} answered {seen}, expected {expected} (unique_users, clicks, impressions)")


async def shards_holding(cluster: LocalCluster, users: list[str]) -> dict[str, set[str]]:
    """For each user, the names of the shards whose database holds an event of theirs."""
    found: dict[str, set[str]] = {u: set() for u in users}
    for shard in topology(cluster).shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            rows = await conn.fetch("SELECT DISTINCT username FROM reactions WHERE username = ANY($1)", users)
        finally:
            await conn.close()
        for row in rows:
            found[row["username"]].add(shard.name)
    return found


async def shard_event_count(dsn: str) -> int:
    count = await fetchval(dsn, "SELECT count(*) FROM reactions")
    assert isinstance(count, int)
    return count


def cli_env(cluster: LocalCluster) -> dict[str, str]:
    """A user's environment: the cluster's settings, and no PGPASSFILE (the tests' own clients have one)."""
    env = {k: v for k, v in os.environ.items() if k != "PGPASSFILE"}
    return {**env, "PORT": str(cluster.settings.port), "DATA_DIR": str(cluster.root),
            "PASSFILE": str(cluster.passfile)}


async def sharding_cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m sharding ARGS`` for this cluster, as a user would type it (another process).

    Asynchronous, so that the test's client sessions see nginx close their idle
    connections when it reloads (a blocked event loop would reuse a closed one).
    """
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "sharding", *args, cwd=REPO_ROOT,
                                                env=cli_env(cluster), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return subprocess.CompletedProcess(list(args), proc.returncode or 0, out.decode(), err.decode())


Poster = Callable[[aiohttp.ClientSession, str], Awaitable[int]]
