"""Faults injected into a local cluster while the audit load runs, each with its recovery.

Every process is signalled by the pid its record keeps (sharding/local/processes.py)
or, for PostgreSQL, by the postmaster's own pid file: never by name. Each
fault checks what the contract promises while it lasts and returns notes
for the report; a broken promise raises ``AssertionError``. Blocking cluster
calls run in a thread so the load keeps running on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable

import aiohttp

from common.hours import current_hour
from sharding import nginx
from sharding.config import load as load_topology
from sharding.local.cluster import LocalCluster
from sharding.local.operations import add_shard, retire_shard
from sharding.local.processes import ProcessRecord, alive, http_get, wait_ready
from sharding.ring import Ring
from tests.faults.load import Load, check_read, get_hour
from tests.support.postmaster import start_postgres
from tests.waiting import wait_until

# Events acknowledged between two steps of a fault: the load is visibly running.
PROGRESS_ACKS = 100
# A restarted aggregator answers every hour complete (unmarked) within this.
RESTARTED_COMPLETE_S = 5.0

Fault = Callable[[LocalCluster, Load], Awaitable[list[str]]]


async def progress(load: Load, what: str, acks: int = PROGRESS_ACKS) -> None:
    target = load.acked + acks
    await wait_until(lambda: load.acked >= target, f"{acks} more acknowledged events {what}")


async def status_of(url: str) -> int:
    return (await asyncio.to_thread(http_get, url))[0]


def kill(record: ProcessRecord, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal the recorded pid, if it is still the recorded process."""
    if alive(record):
        os.kill(record.pid, sig)


def active_writer(cluster: LocalCluster, rng: random.Random) -> tuple[str, ProcessRecord]:
    shards = {s.name for s in load_topology(cluster.shards_file).active_shards}
    records = [r for r in cluster.registry.all("writer") if r.shard in shards and alive(r)]
    record = rng.choice(records)
    return record.shard or "", record


async def restart_writers(cluster: LocalCluster, shard_name: str) -> None:
    for record in cluster.registry.all("writer"):
        if record.shard == shard_name and not alive(record):
            cluster.registry.remove(record.name)
    shard = load_topology(cluster.shards_file).shard(shard_name)
    for record in await asyncio.to_thread(cluster.start_writers, shard):
        await asyncio.to_thread(wait_ready, record)


# -- the faults ---------------------------------------------------------------


async def writer_sigkill(cluster: LocalCluster, load: Load) -> list[str]:
    """SIGKILL one writer: its users move to the next writer; only requests in flight see an error."""
    rng = random.Random()
    shard, record = active_writer(cluster, rng)
    ring = Ring.build(nginx.writer_addresses(load_topology(cluster.shards_file)))
    theirs = {f"{load.plan.prefix}u{i}" for i in range(load.plan.users)}
    theirs = {u for u in theirs if ring.lookup(u) == record.address}
    errors_before = sum(n for kind, n in load.stats.posts.items() if kind != "204")
    kill(record)
    killed_at = time.monotonic()
    await wait_until(lambda: not alive(record), f"{record.name} dies on SIGKILL")
    await wait_until(lambda: any(s.user in theirs and (s.acked_at or 0) > killed_at + 0.5 for s in load.record.events),
                     f"users of {record.name} acknowledged by another writer")
    await progress(load, f"after killing {record.name}")
    errors = sum(n for kind, n in load.stats.posts.items() if kind != "204") - errors_before
    assert errors <= load.plan.writers, f"{errors} failed attempts after killing {record.name}: more than in flight"
    await restart_writers(cluster, shard)
    await progress(load, f"after restarting {record.name}")
    return [f"killed {record.name} (pid {record.pid}); {len(theirs)} of its users moved; "
            f"{errors} attempts failed (at most {load.plan.writers} in flight)"]


async def postgres_sigkill(cluster: LocalCluster, load: Load) -> list[str]:
    """SIGKILL a shard's PostgreSQL: its writer stops taking writes (its users go to the other shards),
    reads are stale or 503; all recover by themselves."""
    shard, writer = active_writer(cluster, random.Random())
    pg = cluster.postgres(load_topology(cluster.shards_file).shard(shard))
    aggregators = [r for r in cluster.registry.all("aggregator") if alive(r)]
    pid = pg.pid()
    await asyncio.to_thread(pg.kill)
    # Not ready: the writer closes its port, so nginx moves its users (writer/gate.py).
    await wait_until(lambda: _is(f"http://{writer.address}/readyz", 0),
                     f"{writer.name} not ready while its database is down")
    direct = await load.post_direct(f"http://{writer.address}")
    assert direct == "not connected", f"{writer.name} answered {direct} with its database down"
    async with aiohttp.ClientSession() as session:
        for agg in aggregators:
            async def degraded(agg: ProcessRecord = agg) -> bool:
                status, stale, _ = await get_hour(session, f"http://{agg.address}", current_hour())
                return status == 503 or (status == 200 and stale)
            await wait_until(degraded, f"{agg.name} marks the live hour stale (or 503) with shard {shard} down")
    await progress(load, f"acknowledged by the other shards while shard {shard} is down")
    await asyncio.to_thread(start_postgres, pg)
    await wait_until(lambda: _is(f"http://{writer.address}/readyz", 200), f"{writer.name} recovers by itself")
    assert alive(writer), f"{writer.name} (pid {writer.pid}) died instead of recovering"
    async with aiohttp.ClientSession() as session:
        for agg in aggregators:
            async def complete(agg: ProcessRecord = agg) -> bool:
                status, stale, _ = await get_hour(session, f"http://{agg.address}", current_hour())
                return status == 200 and not stale
            await wait_until(complete, f"{agg.name} answers complete again")
    await progress(load, f"after restarting PostgreSQL of shard {shard}")
    return [f"killed PostgreSQL of shard {shard} (postmaster pid {pid}); {writer.name} closed its port, "
            f"recovered without a restart"]


async def _is(url: str, status: int) -> bool:
    return await status_of(url) == status


async def aggregator_sigkill(cluster: LocalCluster, load: Load) -> list[str]:
    """SIGKILL one aggregator: the other serves; the restarted one rebuilds its live hour."""
    records = [r for r in cluster.registry.all("aggregator") if alive(r)]
    record = random.choice(records)
    index = int(record.name.rsplit("-", 1)[1]) - 1
    complete_before = load.stats.reads["complete"]
    failed_before = sum(n for kind, n in load.stats.reads.items() if kind not in ("complete", "stale"))
    kill(record)
    await wait_until(lambda: not alive(record), f"{record.name} dies on SIGKILL")
    await wait_until(lambda: load.stats.reads["complete"] >= complete_before + 20, "complete reads while one is down")
    await progress(load, f"after killing {record.name}")
    failed = sum(n for kind, n in load.stats.reads.items() if kind not in ("complete", "stale")) - failed_before
    # nginx retries a GET on the other aggregator; at most the reads in flight could fail.
    assert failed <= load.plan.readers, f"{failed} reads failed while {record.name} was down"
    cluster.registry.remove(record.name)
    restarted = await asyncio.to_thread(cluster.start_aggregator, index, record.address)
    await asyncio.to_thread(wait_ready, restarted)
    wrong_before = len(load.stats.wrong)
    async with aiohttp.ClientSession() as session:
        for hour in [current_hour(), *load.record.hours]:
            kinds: list[str] = []

            async def complete(hour: int = hour, kinds: list[str] = kinds) -> bool:
                kinds.append(await check_read(session, f"http://{restarted.address}", hour, load.record,
                                              load.plan.staleness_s, load.stats.wrong))
                return kinds[-1] == "complete"

            # Its first refreshes open every connection (scram: a few ms of CPU each): on a loaded machine
            # an answer may be marked stale for a moment. Marked is honest; never wrong (checked below).
            try:
                await wait_until(complete, f"restarted {record.name} answers hour {hour} complete",
                                 RESTARTED_COMPLETE_S)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; last answers {kinds[-3:]}") from None
    assert len(load.stats.wrong) == wrong_before
    await progress(load, f"after restarting {record.name}")
    return [f"killed {record.name} (pid {record.pid}); {failed} reads failed meanwhile; "
            f"restarted as pid {restarted.pid}, answers complete"]


async def sigterm_everything(cluster: LocalCluster, load: Load) -> list[str]:
    """SIGTERM every process and every postmaster at once; restart the cluster on the same data."""
    records = [r for r in cluster.registry.all() if alive(r)]
    topology = load_topology(cluster.shards_file)
    postgres = [cluster.postgres(s) for s in topology.shards]
    pids = [pg.pid() for pg in postgres]
    for record in records:
        kill(record, signal.SIGTERM)
    for pid in pids:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)  # smart shutdown: it waits for the writers to drain
    await wait_until(lambda: not any(alive(r) for r in records), "every process exits on SIGTERM", 45.0)
    await wait_until(lambda: all(pg.pid() is None for pg in postgres), "every PostgreSQL exits on SIGTERM", 45.0)
    for record in records:
        cluster.registry.remove(record.name)
    await asyncio.to_thread(cluster.start)
    await progress(load, "after restarting the cluster on the same data")
    return [f"SIGTERM to {len(records)} processes and {len(postgres)} postmasters; restarted on {cluster.root}"]


async def add_and_retire_shard(cluster: LocalCluster, load: Load) -> list[str]:
    """add-shard, then retire an older shard (the new one where the others are kept for gray failures)."""
    added = await asyncio.to_thread(add_shard, cluster)
    await progress(load, f"after adding shard {added}")
    kept: frozenset[str] = getattr(cluster, "kept_shards", frozenset())  # a GrayCluster keeps a, b and c
    active = [s.name for s in load_topology(cluster.shards_file).active_shards if s.name not in kept]
    victim = next((name for name in active if name != added), added)
    await asyncio.to_thread(retire_shard, cluster, victim)
    await progress(load, f"after retiring shard {victim}")
    return [f"added shard {added}, retired shard {victim}"]


FAULTS: dict[str, Fault] = {
    "writer SIGKILL": writer_sigkill,
    "PostgreSQL SIGKILL": postgres_sigkill,
    "aggregator SIGKILL": aggregator_sigkill,
    "add and retire a shard": add_and_retire_shard,
    "SIGTERM everything": sigterm_everything,
}


def heal(cluster: LocalCluster) -> list[str]:
    """Restart whatever of the cluster is down (after a failed fault), by its records."""
    healed = []
    topology = load_topology(cluster.shards_file)
    for shard in topology.shards:
        pg = cluster.postgres(shard)
        if pg.pid() is None:
            start_postgres(pg)
            healed.append(f"postgres-{shard.name}")
    records = {r.name: r for r in cluster.registry.all()}
    for shard in topology.active_shards:
        mine = [r for r in records.values() if r.shard == shard.name]
        if len(mine) < len(shard.writers) or not all(alive(r) for r in mine):
            for record in mine:
                kill(record)
                cluster.registry.remove(record.name)
            for record in cluster.start_writers(shard):
                wait_ready(record)
            healed.append(f"writers of {shard.name}")
    for index, address in enumerate(topology.aggregators):
        aggregator = records.get(f"aggregator-{index + 1}")
        if aggregator is None or not alive(aggregator):
            cluster.registry.remove(f"aggregator-{index + 1}")
            wait_ready(cluster.start_aggregator(index, address))
            healed.append(f"aggregator-{index + 1}")
    nginx_record = records.get("nginx")
    if nginx_record is None or not alive(nginx_record):
        cluster.registry.remove("nginx")
        wait_ready(cluster.start_nginx(topology), "/healthz")
        healed.append("nginx")
    return healed
