"""Gray failures injected while the audit load runs: a database that freezes, is cut off, turns slow,
loses a connection in the middle of a commit, or is replaced behind its DSN.

They run on a GrayCluster (tests/support/gray_cluster.py). Each checks what
the contract promises while the fault lasts (README, Invariants 6) and
returns notes with what it measured; a broken promise raises AssertionError:

- the shard's writer stops taking writes (it refuses connections) within
  DETECTION_S, so nginx moves its users to other shards;
- at least MIN_ACK_SHARE of the POSTs sent after that are acknowledged;
- every aggregator answers the live hour at once (stale-marked, or 503) and a
  cold past hour with 503 within the cold-read bound;
- once the fault ends, writes return to the shard and every answer is
  complete and unmarked again within RECOVERY_S, with no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace

import aiohttp
import asyncpg

from common.hours import current_hour
from sharding.config import load as load_topology
from sharding.local.postgres import PG_USER, LocalPostgres, pg_bin
from sharding.local.processes import ProcessRecord, alive
from tests.faults.faults import Fault, progress
from tests.faults.load import Load, get_hour
from tests.support.freeze import freeze, thaw
from tests.support.gray_cluster import HOSTED, RELAYED, WRITER_RELAYED, GrayCluster
from tests.support.relay import Relay
from tests.waiting import wait_until

# How soon a writer must stop taking the writes of a shard whose database is down.
DETECTION_S = 2.0
# How soon after the fault ends every answer must be complete and unmarked again.
RECOVERY_S = 5.0
# A cold read answers within the shard timeout plus the wait for a slot (aggregator defaults).
COLD_READ_BOUND_S = 1.5
# Every request through nginx is answered within this.
ANSWER_BOUND_S = 3.0
# Slack on every bound above, for a loaded two-core machine running the whole cluster.
MARGIN_S = 1.0
# A live answer from memory takes microseconds; this is a generous "at once".
AT_ONCE_S = 0.5
# How long each outage lasts (the issue asks for at least 10 s).
OUTAGE_S = 10.0
# The POSTs sent after detection that must be acknowledged (by the shards still up).
MIN_ACK_SHARE = 0.95
FROZEN = "b"


def writer_of(cluster: GrayCluster, shard: str) -> ProcessRecord:
    return next(r for r in cluster.registry.all("writer") if r.shard == shard and alive(r))


async def refuses_connections(address: str) -> bool:
    """Whether nothing takes connections at ``address``.

    A listener that is closing resets a connection it had queued but never
    accepted: ECONNRESET then means refused as much as ECONNREFUSED does.
    """
    host, port = address.rsplit(":", 1)
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    writer.close()
    return False


async def ready(session: aiohttp.ClientSession, address: str) -> bool:
    try:
        async with session.get(f"http://{address}/readyz", timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def timed_get(session: aiohttp.ClientSession, base: str, hour: int) -> tuple[int, bool, float]:
    """(status, stale-marked, seconds) of one GET of ``hour`` from ``base``."""
    started = time.monotonic()
    status, stale, _ = await get_hour(session, base, hour)
    return status, stale, time.monotonic() - started


def posts_since(load: Load, before: Counter[str]) -> tuple[int, int]:
    """(acknowledged, all) POST attempts since ``before`` was taken."""
    delta = load.stats.posts - before
    return delta["204"], sum(delta.values())


def never_read_hour() -> int:
    """A past hour (up to about 11 years back) no aggregator has cached: its read is a cold fan-out to every shard."""
    return current_hour() - random.randrange(1_000, 100_000)


async def check_reads_during(session: aiohttp.ClientSession, aggregators: list[ProcessRecord]) -> list[str]:
    """Live hour answered at once and marked; a cold hour 503 within its bound."""
    notes = []
    for agg in aggregators:
        base = f"http://{agg.address}"

        async def marked(base: str = base) -> bool:
            status, stale, took = await timed_get(session, base, current_hour())
            assert took <= AT_ONCE_S + MARGIN_S, f"{base}: the live hour took {took:.2f}s"
            return status == 503 or (status == 200 and stale)

        await wait_until(marked, f"{agg.name} marks the live hour stale (or 503)", deadline_s=2.0 + MARGIN_S)
        status, _, took = await timed_get(session, base, never_read_hour())
        assert status == 503, f"{agg.name}: a cold hour answered {status} with a shard down"
        assert took <= COLD_READ_BOUND_S + MARGIN_S, f"{agg.name}: the cold 503 took {took:.2f}s"
        notes.append(f"{agg.name}: cold 503 in {took:.2f}s")
    return notes


async def complete_again(session: aiohttp.ClientSession, aggregators: list[ProcessRecord]) -> bool:
    for agg in aggregators:
        base = f"http://{agg.address}"
        live_status, live_stale, _ = await timed_get(session, base, current_hour())
        cold_status, _, _ = await timed_get(session, base, never_read_hour())
        if (live_status, live_stale, cold_status) != (200, False, 200):
            return False
    return True


async def database_outage(cluster: GrayCluster, load: Load, shard: str, what: str,
                          begin: Callable[[], None], end: Callable[[], None]) -> list[str]:
    """Run ``begin``, check the outage promises for OUTAGE_S, run ``end``, check the recovery."""
    writer = writer_of(cluster, shard)
    aggregators = [r for r in cluster.registry.all("aggregator") if alive(r)]
    started = time.monotonic()
    await asyncio.to_thread(begin)
    try:
        await wait_until(lambda: refuses_connections(writer.address),
                         f"{writer.name} stops taking writes while {what}", deadline_s=DETECTION_S + MARGIN_S)
        detected = time.monotonic() - started
        before = Counter(load.stats.posts)
        async with aiohttp.ClientSession() as session:
            notes = await check_reads_during(session, aggregators)
        await progress(load, f"while {what}")
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - started)))  # the outage's length: the fault
        acked, sent = posts_since(load, before)
    finally:
        await asyncio.to_thread(end)
    ended = time.monotonic()
    share = acked / sent if sent else 0.0
    assert share >= MIN_ACK_SHARE, f"only {acked} of {sent} POSTs acknowledged while {what}"
    async with aiohttp.ClientSession() as session:
        await wait_until(lambda: ready(session, writer.address), f"{writer.name} takes writes again by itself")
        await wait_until(lambda: complete_again(session, aggregators), "every answer complete and unmarked again",
                         deadline_s=RECOVERY_S + MARGIN_S)
    recovered = time.monotonic() - ended
    assert alive(writer), f"{writer.name} died instead of waiting for its database"
    await progress(load, f"after {what} ended")
    return [f"{what}: writer out after {detected:.2f}s, {acked}/{sent} POSTs acknowledged meanwhile "
            f"({100 * share:.1f}%), complete again {recovered:.2f}s after the end", *notes]


# -- the faults ---------------------------------------------------------------


async def postgres_freeze(cluster: GrayCluster, load: Load) -> list[str]:
    """SIGSTOP every process of shard b's PostgreSQL for OUTAGE_S: it accepts connections and answers nothing."""
    pg = cluster.postgres(load_topology(cluster.shards_file).shard(FROZEN))
    stopped: list[int] = []
    return await database_outage(cluster, load, FROZEN, f"shard {FROZEN}'s PostgreSQL is frozen",
                                 lambda: freeze(pg, stopped), lambda: thaw(pg, stopped))


async def network_partition(cluster: GrayCluster, load: Load) -> list[str]:
    """Drop every packet of shard c's database host for OUTAGE_S: no reset, no ICMP, nothing."""
    return await database_outage(cluster, load, HOSTED, f"shard {HOSTED}'s database host is cut off",
                                 cluster.db_host.partition, cluster.db_host.heal)


async def slow_link(cluster: GrayCluster, load: Load) -> list[str]:
    """200 ms more per round trip to shard a's database: slower, never wrong, never out."""
    assert cluster.relay is not None
    writer = writer_of(cluster, RELAYED)
    before = Counter(load.stats.posts)
    assert await asyncio.to_thread(cluster.relay.switch_delay) > 0
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + OUTAGE_S / 2
            while time.monotonic() < deadline:
                assert await ready(session, writer.address), f"{writer.name} went out over a slow link"
                await progress(load, "over the slow link", 50)
    finally:
        assert await asyncio.to_thread(cluster.relay.switch_delay) == 0
    acked, sent = posts_since(load, before)
    assert acked >= MIN_ACK_SHARE * sent, f"only {acked} of {sent} POSTs acknowledged over the slow link"
    return [f"slow link to shard {RELAYED}: {acked}/{sent} POSTs acknowledged, {writer.name} stayed in"]


async def writers_waiting_on_lock(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reactions-writer'"
            " AND wait_event_type = 'Lock'"))
    finally:
        await conn.close()


async def cut_mid_commit(cluster: GrayCluster, load: Load) -> list[str]:
    """Cut shard a's database connections while a commit is surely in flight (held on a row lock)."""
    assert cluster.relay is not None
    pg = cluster.postgres(load_topology(cluster.shards_file).shard(RELAYED))
    unknown_before = load.stats.unknown
    locker = await asyncpg.connect(pg.dsn)  # straight to the server, not through the relay
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE hour_counts IN ACCESS EXCLUSIVE MODE")
            await wait_until(lambda: writers_waiting_on_lock(pg.dsn), "a commit of shard a waiting on the lock")
            cut = await asyncio.to_thread(cluster.relay.cut)
    finally:
        await locker.close()
    await wait_until(lambda: load.stats.unknown > unknown_before, "the cut commit answered as unknown")
    await progress(load, "after the cut")
    return [f"cut {cut} connections of shard {RELAYED} mid-commit: "
            f"{load.stats.unknown - unknown_before} answers unknown, retried with their keys"]


@contextlib.contextmanager
def stopped_shard(pg: LocalPostgres) -> Iterator[None]:
    pg.stop()
    try:
        yield
    finally:
        if pg.pid() is None:
            pg.start()


def on_side_port(pg: LocalPostgres) -> LocalPostgres:
    """The same data directory served on a port no service knows: for dumping or restoring unseen."""
    return replace(pg, port=pg.port + 1)


def client(tool: str, pg: LocalPostgres, *args: str) -> None:
    subprocess.run([pg_bin(tool), "-h", pg.listen_address, "-p", str(pg.port), "-U", PG_USER, *args], check=True)


def replace_database(pg: LocalPostgres) -> str:
    """Stop the server, copy its database logically into a new cluster, and serve that one on the same port.

    The copy holds every committed row, so no count changes; but it is another
    database (new system identifier, OID and schema UUID), as after a restore.
    Both the dump and the restore happen on a side port, so no writer sees a
    half-restored database (one would give it a fresh schema of its own).
    """
    dump = pg.data_dir.parent / f"{pg.data_dir.name}.dump"  # written and read by this (root) process
    old = pg.data_dir.with_name(pg.data_dir.name + ".old")
    with stopped_shard(pg):
        side = on_side_port(pg)
        side.start()
        try:
            client("pg_dump", side, "-Fc", "-f", str(dump), "reactions")
        finally:
            side.stop()
        shutil.move(pg.data_dir, old)
        side.start()  # a new initdb: a new system identifier; create_database: a new OID
        try:
            client("pg_restore", side, "-d", "reactions", str(dump))
            # What every restore must end with (README): the copy is a new shard database.
            client("psql", side, "-d", "reactions", "-qc", "UPDATE schema_info SET shard_uuid = gen_random_uuid()")
        finally:
            side.stop()
    dump.unlink()
    return str(old)


async def database_replaced(cluster: GrayCluster, load: Load) -> list[str]:
    """Shard b's database is replaced by a restored copy behind the same DSN: the aggregators notice and rebuild."""
    shard = load_topology(cluster.shards_file).shard(FROZEN)
    pg = cluster.postgres(shard)
    identities = await shard_identities(cluster, FROZEN)
    old = await asyncio.to_thread(replace_database, pg)
    async with aiohttp.ClientSession() as session:
        aggregators = [r for r in cluster.registry.all("aggregator") if alive(r)]
        await wait_until(lambda: ready(session, writer_of(cluster, FROZEN).address), "shard b's writer back")

        async def all_see_new() -> bool:
            return all(i not in identities for i in await shard_identities(cluster, FROZEN))

        await wait_until(all_see_new, "every aggregator reads the new database of shard b")
        await wait_until(lambda: complete_again(session, aggregators), "every answer complete again",
                         deadline_s=RECOVERY_S + MARGIN_S)
    await progress(load, "after the replacement")
    shutil.rmtree(old, ignore_errors=True)
    return [f"shard {FROZEN}'s database replaced by a restored copy behind the same DSN"]


async def shard_identities(cluster: GrayCluster, shard: str) -> list[str]:
    """Each aggregator's view of ``shard``'s database identity (GET /shards)."""
    found = []
    async with aiohttp.ClientSession() as session:
        for address in load_topology(cluster.shards_file).aggregators:
            async with session.get(f"http://{address}/shards") as resp:
                listing = {s["name"]: s for s in (await resp.json())["shards"]}
            found.append(str(listing[shard]["identity"]))
    return found


# How late the relays deliver what they hold: past every bound on the way, as a healed partition's retransmission.
LATE_BY_S = 10.0
# The relay reports a held connection's end within this of its hold (tests/support/relay.py: 5 s for the answer).
LATE_SETTLED_S = LATE_BY_S + 5.0 + MARGIN_S + 5.0
# PostgreSQL's ErrorResponse field of the commit guard's SQLSTATE (common/schema.py).
LATE_COMMIT_FIELD = b"CRS001\x00"


def held_to_the_end(relay: Relay) -> tuple[float, float, bytes]:
    """Wait for a hold to catch, deliver and close: (delivered, closed) seconds after the catch, and the answer."""
    relay.held(LATE_SETTLED_S)
    held = time.monotonic()
    relay.delivered(LATE_SETTLED_S)
    delivered = time.monotonic() - held
    _, answer = relay.closed(LATE_SETTLED_S)
    return delivered, time.monotonic() - held, answer


async def late_delivery(cluster: GrayCluster, load: Load) -> list[str]:
    """A POST held on nginx's link to shard b's writer and a commit held on shard a's link to its database,
    each delivered LATE_BY_S later (README, Invariants 8): refused as late and rolled back, never counted."""
    assert cluster.relay is not None and cluster.writer_relay is not None
    await asyncio.to_thread(cluster.writer_relay.hold, LATE_BY_S, b"POST /analytics")
    await asyncio.to_thread(cluster.relay.hold, LATE_BY_S, load.plan.prefix.encode())
    (post_at, post_end, post_answer), (commit_at, commit_end, commit_answer) = await asyncio.gather(
        asyncio.to_thread(held_to_the_end, cluster.writer_relay), asyncio.to_thread(held_to_the_end, cluster.relay))
    assert post_answer.startswith(b"HTTP/1.1 503") and b"past its deadline" in post_answer, post_answer[:300]
    assert LATE_COMMIT_FIELD in commit_answer, commit_answer
    await progress(load, "after the late deliveries")
    return [f"a POST held on nginx's link to writer {WRITER_RELAYED}: delivered {post_at:.1f}s late, refused as late"
            f" (503), final {post_end:.1f}s after it was held",
            f"a commit held on writer {RELAYED}'s link to PostgreSQL: delivered {commit_at:.1f}s late, rolled back"
            f" by the commit guard, final {commit_end:.1f}s after it was held"]


GRAY_FAULTS: dict[str, Fault] = {
    "PostgreSQL frozen": postgres_freeze,  # type: ignore[dict-item]
    "network partition": network_partition,  # type: ignore[dict-item]
    "slow link": slow_link,  # type: ignore[dict-item]
    "connection cut mid-commit": cut_mid_commit,  # type: ignore[dict-item]
    "database replaced": database_replaced,  # type: ignore[dict-item]
    "late delivery": late_delivery,  # type: ignore[dict-item]
}
