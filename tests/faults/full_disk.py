"""A shard whose disk fills up under the audit load: its data files first, then its WAL.

Shard b's data directory is on a small tmpfs (tests/support/tmpfs.py). The
fault fills the filesystem to the last byte while the load runs:

1. data files: a batch that needs a new page is rolled back by PostgreSQL
   ("could not extend file": 503, not stored); the writer's probe must then
   prove it can allocate space, fails, and the writer closes its port, so
   nginx moves b's users to the other shards;
2. WAL: with ``wal_recycle = off`` a segment switch needs a new 16 MB WAL
   file, which ENOSPC turns into a PANIC: PostgreSQL stops, commits in
   flight are unknown, and ``run`` keeps trying to start it again;
3. the filler is deleted: ``run`` starts PostgreSQL, its writer's heartbeat
   commits, and the writer takes writes again by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg

from sharding.config import load as load_topology
from sharding.local.cluster import LocalCluster
from sharding.local.processes import alive
from tests.faults.faults import progress
from tests.faults.gray import refuses_connections
from tests.faults.load import Load
from tests.support.tmpfs import fill
from tests.waiting import wait_until

FULL = "b"
# The writer is out two failed probes after a rolled-back batch, within a second
# or two; generous for a loaded machine.
OUT_DEADLINE_S = 15.0
# run's backoff doubles with each failed start while the disk is full (up to
# 30 s), then PostgreSQL's start and the writer's next heartbeat.
BACK_DEADLINE_S = 90.0
# How long the disk stays full once PostgreSQL has stopped: the fault's length,
# long enough for run to fail to start it at least once.
STOPPED_FOR_S = 4.0


async def execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


async def panic_on_wal(dsn: str) -> None:
    """Switch to a new WAL segment and write: the new 16 MB file cannot be made."""
    # The server PANICs under this very statement, or already did.
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        await execute(dsn, "SELECT pg_switch_wal()", "CREATE TABLE wal_filler AS SELECT generate_series(1, 100) n")


async def writer_ready(address: str) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://{address}/readyz", timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def disk_full(cluster: LocalCluster, load: Load, disk: Path) -> list[str]:
    pg = cluster.postgres(load_topology(cluster.shards_file).shard(FULL))
    writer = next(r for r in cluster.registry.all("writer") if r.shard == FULL and alive(r))
    postmaster = pg.pid()
    await execute(pg.dsn, "ALTER SYSTEM SET wal_recycle = off", "SELECT pg_reload_conf()")
    before = Counter(load.stats.posts)
    filler = disk / "filler"
    started = time.monotonic()
    filled = await asyncio.to_thread(fill, filler)
    try:
        await wait_until(lambda: refuses_connections(writer.address), f"writer {FULL} out once its disk is full",
                         deadline_s=OUT_DEADLINE_S)
        out_after = time.monotonic() - started
        rolled_back = load.stats.posts["503 writer"] - before["503 writer"]
        assert pg.pid() == postmaster, "PostgreSQL stopped on full data files: expected a rollback, not a crash"
        assert rolled_back > 0, f"no batch answered 503 on the full disk: {dict(load.stats.posts)}"
        await progress(load, f"while shard {FULL}'s data files cannot grow")
        await panic_on_wal(pg.dsn)
        await wait_until(lambda: pg.pid() != postmaster, f"PostgreSQL {FULL} stops when its WAL cannot grow",
                         deadline_s=OUT_DEADLINE_S)
        stopped = time.monotonic()
        await progress(load, f"while shard {FULL}'s PostgreSQL is down")
        await asyncio.sleep(max(0.0, STOPPED_FOR_S - (time.monotonic() - stopped)))
    finally:
        filler.unlink()
    freed = time.monotonic()
    await wait_until(lambda: writer_ready(writer.address), f"writer {FULL} takes writes again by itself",
                     deadline_s=BACK_DEADLINE_S)
    assert alive(writer), f"writer {FULL} died instead of waiting for its database"
    back_after = time.monotonic() - freed
    await progress(load, "after the disk has space again")
    logged = [line for line in pg.log_file.read_text(errors="replace").splitlines()
              if "PANIC" in line or "No space left" in line]
    return [f"disk of shard {FULL} filled ({filled >> 20} MB of filler): writer out after {out_after:.1f}s, "
            f"{rolled_back} POSTs answered 503 (rolled back); WAL full: PostgreSQL stopped; "
            f"space back: writes back after {back_after:.1f}s",
            f"posts: {dict(load.stats.posts - before)}", *logged[:6]]
