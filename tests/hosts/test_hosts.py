"""Reactions on several hosts (network namespaces): the contract, apply under load, retiring, a host cut off.

Every client request goes to the entry host's address; every part binds its
own host's address only.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from common.hours import MS_PER_HOUR, now_ms
from common.settings import SETTLE_BOUND_S, STALENESS_BOUND_S
from sharding.config import RETIRED
from sharding.ring import Ring
from tests.support.cluster import counts, own_past_hour_ts, post, shard_event_count, unique_users, wait_counts
from tests.support.hosts import AGGREGATOR_PORT, ENTRY_PORT, Hosts, listening, shards_json, stop_process
from tests.support.netns import partitioned
from tests.support.shard_db import fetchval
from tests.waiting import wait_until

# Exact answers once the writes stop: the live hour lags commits by a refresh (50 ms in tests).
EXACT_DEADLINE_S = 20.0
# The bounded load: this many clients, each posting events for its own users until told to stop.
LOAD_CLIENTS = 8
# A client's request is answered within nginx's 3 s bound; this leaves room for a loaded machine.
CLIENT_TIMEOUT_S = 10.0


async def test_every_part_binds_only_its_own_hosts_address(hosts: Hosts) -> None:
    assert listening(hosts.entry) == {hosts.entry.address}, "nginx: the public port and the topology port"
    for host in [*hosts.aggregator_hosts, *(s.host for s in hosts.shard_hosts.values())]:
        assert listening(host) == {host.address}, f"{host}: its aggregator, or its writer and PostgreSQL"


async def test_the_http_contract_through_the_entry_host(hosts: Hosts) -> None:
    base, ts = hosts.base, own_past_hour_ts()
    async with aiohttp.ClientSession() as session:
        assert await post(session, f"{base}/analytics?timestamp={ts}&user=alice&event=click") == 204
        assert await post(session, f"{base}/analytics?timestamp={ts}&user=bob&impression") == 204
        assert await post(session, f"{base}/analytics/{ts}/carol/click") == 204
        assert await post(session, f"{base}/analytics?timestamp=soon&user=dan&click") == 400
        await wait_counts(session, base, ts, (3, 2, 1))
        async with session.get(f"{base}/analytics?timestamp={ts}") as resp:
            assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert await resp.text() == "unique_users,3\nclicks,2\nimpressions,1\n"
        async with session.delete(f"{base}/analytics?timestamp={ts}") as resp:
            assert resp.status == 405 and "GET" in resp.headers["Allow"]
        for path in ("/nowhere", "/shards.json"):
            async with session.get(f"{base}{path}") as resp:
                assert resp.status == 404, f"{path} on the public port"
        async with session.get(f"http://{hosts.entry.address}:{ENTRY_PORT + 1}/shards.json") as resp:
            assert resp.status == 200, "the shard file is on the internal topology port"


@dataclass
class Load:
    """Clicks for new users of one hour through the entry host, each retried with its key until 204."""

    base: str
    ts: int
    acknowledged: set[str] = field(default_factory=set)
    acknowledged_at: list[float] = field(default_factory=list)
    # Users with an attempt whose outcome is unknown (504 marked, or no answer): possibly counted twice
    # if the retry landed on another shard (README, Gray failures: the one limit).
    unknown: set[str] = field(default_factory=set)
    answers: dict[int, int] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, session: aiohttp.ClientSession, users: itertools.count[int], tag: str) -> None:
        while not self.stop.is_set():
            user = f"{tag}-{next(users)}"
            key = uuid.uuid4().hex
            while True:  # the same key until committed: a retry is never counted twice on one shard
                status = await self.post(session, user, key)
                self.answers[status] = self.answers.get(status, 0) + 1
                if status == 204:
                    self.acknowledged.add(user)
                    self.acknowledged_at.append(time.monotonic())
                    break
                if status in (0, 504):
                    self.unknown.add(user)
                await asyncio.sleep(0.05)

    async def post(self, session: aiohttp.ClientSession, user: str, key: str) -> int:
        url = URL(f"{self.base}/analytics?timestamp={self.ts}&user={user}&click", encoded=True)
        try:
            async with session.post(url, headers={"Idempotency-Key": key}) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return 0


async def load_running(load: Load) -> None:
    """Until the load has its first answer: it runs before the fault or the change starts."""
    await wait_until(lambda: bool(load.acknowledged), "the load's first acknowledged event", EXACT_DEADLINE_S)


async def run_load(load: Load, during: asyncio.Future[object]) -> Load:
    """``load`` until ``during`` is done, then every client finishes its event."""
    users, tag = itertools.count(), uuid.uuid4().hex[:8]
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [asyncio.create_task(load.client(session, users, tag)) for _ in range(LOAD_CLIENTS)]
        try:
            await during
        finally:
            load.stop.set()
            await asyncio.gather(*clients)
    return load


async def test_apply_adds_a_shard_on_a_fourth_host_under_load(hosts: Hosts) -> None:
    ts = own_past_hour_ts()
    added = hosts.add_shard_host("d")
    before = hosts.topology()
    hosts.edit(before.with_shard(added.shard()))

    load = Load(hosts.base, ts)

    async def apply_midway() -> object:
        await load_running(load)
        return await asyncio.to_thread(hosts.apply)

    applying = asyncio.ensure_future(apply_midway())
    await run_load(load, applying)
    result = applying.result()
    assert result.returncode == 0, result.stderr
    steps = result.stdout
    order = ["checking its database", "reachable, schema present", "writer: waiting for", "reads every shard",
             "reloading it", "] applied /"]
    positions = [steps.find(s) for s in order]
    assert -1 not in positions and positions == sorted(positions), f"apply's steps in the safe order:\n{steps}"
    n = len(load.acknowledged)
    assert n > 50, f"the load ran ({load.answers})"
    async with aiohttp.ClientSession() as session:
        await wait_counts(session, hosts.base, ts, (n, n, 0))
        users = unique_users(100, "after")
        for user in users:
            assert await post(session, f"{hosts.base}/analytics/{ts}/{user}/impression") == 204
        await wait_counts(session, hosts.base, ts, (n + 100, n, 100))
    for address in hosts.aggregators:
        assert shards_json(hosts, address)["d"]["healthy"], f"{address} reads d"
    assert added.name in {s.name for s in hosts.topology().active_shards}
    assert await shard_event_count(added.dsn) > 0, "writes reach the new host"
    again = hosts.apply()
    assert again.returncode == 0 and "nothing to do" in again.stdout, "apply is idempotent"


async def test_apply_adds_and_removes_an_aggregator_host(hosts: Hosts) -> None:
    host = hosts.network.add_host()
    address = f"{host.address}:{AGGREGATOR_PORT}"
    part = hosts.start_aggregator("aggregator-3", host)
    hosts.wait_ready(part, f"http://{address}/readyz")
    before = hosts.topology()
    hosts.edit(before.with_aggregators([*before.aggregators, address]))
    result = await asyncio.to_thread(hosts.apply)
    assert result.returncode == 0, result.stderr
    assert f"new aggregator {address}" in result.stdout and f"aggregator {address} reads every shard" in result.stdout
    assert f"server {address} " in (hosts.data_dir / "nginx" / "nginx.conf").read_text(), "nginx reads from it"
    hosts.edit(before)
    result = await asyncio.to_thread(hosts.apply)
    assert result.returncode == 0 and f"aggregator {address} removed" in result.stdout, result.stderr
    assert f"server {address} " not in (hosts.data_dir / "nginx" / "nginx.conf").read_text()
    stop_process(part.proc)
    ts = own_past_hour_ts()
    async with aiohttp.ClientSession() as session:
        assert await post(session, f"{hosts.base}/analytics/{ts}/after-aggregators/click") == 204
        await wait_counts(session, hosts.base, ts, (1, 1, 0))


async def test_a_retired_shard_takes_no_writes_and_is_still_counted(hosts: Hosts) -> None:
    ts = own_past_hour_ts()
    victim = hosts.topology().active_shards[0]
    async with aiohttp.ClientSession() as session:
        first = unique_users(60, "pre")
        for user in first:
            assert await post(session, f"{hosts.base}/analytics/{ts}/{user}/click") == 204
        await wait_counts(session, hosts.base, ts, (60, 60, 0))
        held = await shard_event_count(victim.dsn)
        hosts.edit(hosts.topology().with_state(victim.name, RETIRED))
        result = await asyncio.to_thread(hosts.apply)
        assert result.returncode == 0, result.stderr
        assert f"shard {victim.name} retired" in result.stdout
        for user in unique_users(60, "post"):
            assert await post(session, f"{hosts.base}/analytics/{ts}/{user}/click") == 204
        await wait_counts(session, hosts.base, ts, (120, 120, 0))
    assert await shard_event_count(victim.dsn) == held, "no write reached the retired shard"


async def test_a_shard_host_cut_off_fails_writes_over_and_loses_nothing(hosts: Hosts) -> None:
    ts = now_ms() // MS_PER_HOUR * MS_PER_HOUR + 1  # the live hour: its answers are marked stale
    victim = hosts.shard_hosts[hosts.topology().active_shards[-1].name]
    seen: dict[str, int] = {"stale": 0, "503": 0, "fresh": 0}
    window: list[float] = []
    async with aiohttp.ClientSession() as session:
        start = await counts(session, hosts.base, ts)
        assert start is not None

        load = Load(hosts.base, ts)

        async def cut_off() -> object:
            await load_running(load)
            with partitioned(victim.host):
                window.append(time.monotonic())
                await wait_until(lambda: read_kind(session, hosts.base, ts, seen), "a read is marked stale or 503",
                                 EXACT_DEADLINE_S, poll_s=0.1)
                await asyncio.sleep(3.0)  # writes keep coming while the host is gone
                window.append(time.monotonic())
            return None

        await run_load(load, asyncio.ensure_future(cut_off()))
        during = sum(window[0] <= t <= window[1] for t in load.acknowledged_at)
        assert during > 20, f"writes failed over while {victim.host} was cut off ({during}; {load.answers})"
        n, unknown = len(load.acknowledged), len(load.unknown)
        await wait_until(lambda: exact_after_cut(session, hosts.base, ts, start, n, unknown),
                         f"every acknowledged event counted: {n} users, {n}..{n + unknown} clicks", EXACT_DEADLINE_S,
                         poll_s=0.1)
    assert seen["stale"] + seen["503"] > 0, seen


async def exact_after_cut(session: aiohttp.ClientSession, base: str, ts: int, start: tuple[int, int, int],
                          n: int, unknown: int) -> bool:
    """Unique users exact; clicks at least the acknowledged, at most one more per unknown outcome; unmarked."""
    async with session.get(f"{base}/analytics?timestamp={ts}") as resp:
        if resp.status != 200 or "X-Reactions-Stale" in resp.headers:
            return False
        lines = dict(line.split(",") for line in (await resp.text()).splitlines())
    users, clicks = int(lines["unique_users"]) - start[0], int(lines["clicks"]) - start[1]
    return users == n and n <= clicks <= n + unknown and int(lines["impressions"]) == start[2]


async def read_kind(session: aiohttp.ClientSession, base: str, ts: int, seen: dict[str, int]) -> bool:
    """One GET of the live hour: True once it is marked stale or answers 503 (the shard is unreachable)."""
    try:
        async with session.get(f"{base}/analytics?timestamp={ts}") as resp:
            await resp.read()
            kind = "503" if resp.status == 503 else ("stale" if "X-Reactions-Stale" in resp.headers else "fresh")
    except (aiohttp.ClientError, TimeoutError):
        return False
    seen[kind] += 1
    return kind != "fresh"


# A partition long enough for a request nginx sent into it to reach the writer
# past its deadline (nginx's stamp + 2.5 s) when TCP retransmits it after the heal.
HEAL_AFTER_UNKNOWN_S = 2.0
# TCP's retransmission timer doubles while the host is gone: the next try after the heal comes within this.
RETRANSMITTED_S = 30.0


async def late_refusals(session: aiohttp.ClientSession, writer: str) -> float:
    async with session.get(f"http://{writer}/metrics") as resp:
        text = await resp.text()
    family = next(f for f in text_string_to_metric_families(text) if f.name == "reactions_events_late")
    return sum(s.value for s in family.samples if s.name.endswith("_total"))


async def test_a_write_retransmitted_after_a_partition_heals_is_never_counted(hosts: Hosts) -> None:
    """README, Invariants 8: the counts S after the unknown answer are final, whatever TCP delivers later."""
    ts = own_past_hour_ts()
    victim = hosts.shard_hosts[hosts.topology().active_shards[0].name]
    ring = Ring.build(s.writers[0] for s in hosts.topology().active_shards)
    users = [u for u in unique_users(400, "retransmit") if ring.lookup(u) == victim.writer]
    warm, candidates = users[:30], users[30:]
    acknowledged: set[str] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as session:
        # Many at once: every nginx worker keeps a connection to the writer, so the write is sent into the partition.
        answers = await asyncio.gather(*(post(session, f"{hosts.base}/analytics/{ts}/{u}/click") for u in warm))
        assert set(answers) == {204}, answers
        acknowledged.update(warm)
        refused_before = await late_refusals(session, victim.writer)
        with partitioned(victim.host):
            late, answered = None, 0.0
            for user in candidates[:5]:  # nginx without a kept connection to the writer fails over: 204 elsewhere
                status = await post(session, f"{hosts.base}/analytics/{ts}/{user}/click")
                if status == 204:
                    acknowledged.add(user)
                    continue
                assert status == 504, status
                late, answered = user, time.monotonic()
                break
            assert late is not None, "nginx sent no write into the partition"
            await asyncio.sleep(HEAL_AFTER_UNKNOWN_S)
        healed = time.monotonic()
        expected = (len(acknowledged), len(acknowledged), 0)
        await asyncio.sleep(max(0.0, answered + SETTLE_BOUND_S - time.monotonic()))
        at_settle = await counts(session, hosts.base, ts)
        await wait_until(lambda: refused_later(session, victim.writer, refused_before),
                         "the writer gets the retransmitted write after the heal, and refuses it as late",
                         RETRANSMITTED_S, poll_s=0.2)
        print(f"\nunknown answer, heal +{healed - answered:.1f}s, retransmitted and refused as late"
              f" +{time.monotonic() - answered:.1f}s; counts at +{SETTLE_BOUND_S:g}s: {at_settle}")
        await asyncio.sleep(STALENESS_BOUND_S)  # a commit at the retransmission would show by now
        final = await counts(session, hosts.base, ts)
    assert at_settle == final == expected, (at_settle, final, expected)
    assert await shard_event_count_of(victim.dsn, late) == 0


async def refused_later(session: aiohttp.ClientSession, writer: str, before: float) -> bool:
    try:
        return await late_refusals(session, writer) > before
    except (aiohttp.ClientError, TimeoutError):
        return False


async def shard_event_count_of(dsn: str, user: str) -> int:
    count = await fetchval(dsn, "SELECT count(*) FROM reactions WHERE username = $1", user)
    assert isinstance(count, int)
    return count
