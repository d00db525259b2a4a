"""Reactions under Docker compose, built and started by `make docker-up` on a private Docker engine.

The images are what users build (debian:bookworm-slim, made with debootstrap
where it cannot be pulled, and Debian's packages); nothing stands in for them.
Against the stack on a free port: the contract, every container healthy,
SIGKILLs from the host under the audit load, `make docker-down` then
`make docker-up` keeping every count, a shard added with the steps of docs/operations.md (Docker compose).
The tests run in this file's order on one stack (session-scoped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from common.hours import current_hour, now_ms
from perf.ledger import HourCounts
from sharding.ring import Ring
from tests.faults.audit import assert_clean, audit, take_baseline
from tests.faults.faults import progress
from tests.faults.load import Load, LoadPlan, get_hour
from tests.faults.record import AuditRecord
from tests.support.compose_stack import VENV, ComposeStack
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(900)

WRITERS = ["writer-a", "writer-b", "writer-c"]
AGGREGATORS = ["aggregator-1", "aggregator-2"]
SHARD_DBS = ["pg-a", "pg-b", "pg-c"]
# A killed container is back (restart policy) and healthy within this; compose's
# health checks run every 2 s and a writer waits for its database.
RECOVERY_S = 60.0
# nginx's failure mark on a writer lasts fail_timeout (5 s); with a margin for a loaded machine.
USERS_BACK_S = 15.0
# An answer not marked stale may lag the commits by this (docs/design.md, Invariants 5).
STALENESS_S = 2.0


async def post(session: aiohttp.ClientSession, url: str) -> int:
    async with session.post(url) as answer:
        return answer.status


async def exact(stack: ComposeStack, hour: int, expected: HourCounts, deadline_s: float = 10.0) -> None:
    async with aiohttp.ClientSession() as session:
        async def equal() -> bool:
            status, stale, counted = await get_hour(session, stack.base_url, hour)
            return status == 200 and not stale and counted == expected
        await wait_until(equal, f"hour {hour} answered exactly {expected}", deadline_s, poll_s=0.2)


async def test_the_contract_through_nginx(stack: ComposeStack) -> None:
    ts, tag = now_ms(), os.urandom(3).hex()
    base = stack.base_url
    async with aiohttp.ClientSession() as session:
        before = (await get_hour(session, base, current_hour()))[2]
        assert before is not None
        assert await post(session, f"{base}/analytics?timestamp={ts}&user=alice-{tag}&event=click") == 204
        assert await post(session, f"{base}/analytics?timestamp={ts}&user=bob-{tag}&impression") == 204
        assert await post(session, f"{base}/analytics/{ts}/carol-{tag}/click") == 204
        async with session.post(f"{base}/analytics?timestamp=soon&user=dave-{tag}&event=click") as answer:
            assert answer.status == 400 and "timestamp" in await answer.text()
        async with session.get(f"{base}/") as answer:
            assert answer.status == 200 and "text/html" in answer.headers["Content-Type"]
    await exact(stack, current_hour(), HourCounts(before.unique_users + 3, before.clicks + 2,
                                                  before.impressions + 1))


async def test_every_container_is_healthy_and_unprivileged(stack: ComposeStack) -> None:
    every = {name: "healthy" for name in [*SHARD_DBS, *WRITERS, *AGGREGATORS, "nginx"]}
    # nginx's first health check may not have run yet when it first answers (checks every 2 s).
    await wait_until(lambda: stack.health() == every, f"every container healthy ({stack.health()})", 30, poll_s=0.5)
    for service, user in [("pg-a", 999), ("writer-a", 10001), ("aggregator-1", 10001), ("nginx", 33)]:
        status = Path(f"/proc/{stack.pid(service)}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert int(uid) == user, f"{service} runs as uid {uid}"
    passfile = stack.compose("exec", "-T", "writer-a", "stat", "-c", "%U %a", "/run/reactions/pgpass").stdout
    assert passfile.split() == ["reactions", "600"]


def test_the_base_is_debian_bookworm_slim_as_users_pull_it(stack: ComposeStack) -> None:
    """Pulled or made by make docker-base: Debian's apt sources and a CMD, like the official image."""
    docker = stack.engine.docker
    assert docker("image", "inspect", "-f", "{{json .Config.Cmd}}", "debian:bookworm-slim").stdout.strip() == '["bash"]'
    sources = docker("run", "--rm", "debian:bookworm-slim", "cat", "/etc/apt/sources.list.d/debian.sources").stdout
    suites = {w for line in sources.splitlines() if line.startswith("Suites:") for w in line.split()[1:]}
    assert suites == {"bookworm", "bookworm-updates", "bookworm-security"}


async def sigkill(stack: ComposeStack, service: str) -> None:
    """SIGKILL the container's main process from the host (not `docker kill`: the restart policy applies)."""
    pid = stack.pid(service)
    restarts = int(stack.engine.docker("inspect", "-f", "{{.RestartCount}}", stack.container(service)).stdout)
    os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        state = stack.engine.docker("inspect", "-f", "{{.RestartCount}} {{.State.Health.Status}}",
                                    stack.container(service), check=False).stdout.split()
        return len(state) == 2 and int(state[0]) > restarts and state[1] == "healthy"
    await wait_until(back, f"{service} restarted by its policy and healthy", RECOVERY_S, poll_s=0.5)


async def audited_kill(stack: ComposeStack, name: str, service: str) -> Load:
    plan = LoadPlan(base_url=stack.base_url, prefix=f"{name}-{os.urandom(3).hex()}-", users=150, rate=150.0,
                    writers=6, max_events=6000, max_seconds=120.0, past_hours=(current_hour() - 1,))
    record = AuditRecord(plan.prefix)
    await take_baseline(plan.base_url, record, [current_hour(), *plan.past_hours])
    load = Load(plan, record)
    running = asyncio.create_task(load.run())
    try:
        await progress(load, "before the kill", 100)
        await sigkill(stack, service)
        await progress(load, "after the restart", 100)
    finally:
        load.stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    aggregators = [f"http://{stack.address(a)}:8080" for a in AGGREGATORS]
    report = await audit(name, plan.base_url, aggregators, [stack.dsn(pg) for pg in SHARD_DBS], record,
                         load.stats, STALENESS_S)
    print(report.line())
    assert_clean(report)  # nothing acknowledged lost, nothing refused counted, every answer right
    return load


async def rows_of(stack: ComposeStack, pg: str, user: str) -> int:
    conn = await asyncpg.connect(stack.dsn(pg))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM reactions WHERE username = $1", user))
    finally:
        await conn.close()


async def test_a_writer_killed_from_the_host_comes_back_with_its_users(stack: ComposeStack) -> None:
    await audited_kill(stack, "writerkill", "writer-a")
    # Its address is fixed, so nginx (which resolved it once) sends its users to it again once its
    # failure mark has expired (fail_timeout, 5 s).
    ring = Ring.build([f"{w}:8080" for w in WRITERS])

    async def back_on_writer_a() -> bool:
        probe = users_of(ring, "writer-a", "probe", 1)[0]
        async with aiohttp.ClientSession() as session:
            assert await post(session, f"{stack.base_url}/analytics?timestamp={now_ms()}&user={probe}&click") == 204
        return await rows_of(stack, "pg-a", probe) == 1
    await wait_until(back_on_writer_a, "writer-a's users back on writer-a", USERS_BACK_S, poll_s=1.0)
    users = users_of(ring, "writer-a", "back", 5)
    async with aiohttp.ClientSession() as session:
        for user in users:
            assert await post(session, f"{stack.base_url}/analytics?timestamp={now_ms()}&user={user}&click") == 204
    assert [await rows_of(stack, "pg-a", u) for u in users] == [1] * len(users), "writer-a's users went elsewhere"


async def test_postgres_killed_from_the_host_comes_back(stack: ComposeStack) -> None:
    await audited_kill(stack, "pgkill", "pg-b")
    assert stack.health()["writer-b"] == "healthy"


async def current_counts(stack: ComposeStack, hours: list[int]) -> dict[int, HourCounts]:
    found = {}
    async with aiohttp.ClientSession() as session:
        for hour in hours:
            status, stale, counted = await get_hour(session, stack.base_url, hour)
            assert status == 200 and not stale and counted is not None
            found[hour] = counted
    return found


async def test_docker_down_then_up_keeps_every_count(stack: ComposeStack) -> None:
    hours = [current_hour(), current_hour() - 1]
    before = await current_counts(stack, hours)
    assert sum(c.clicks + c.impressions for c in before.values()) > 0
    await asyncio.to_thread(stack.make, "docker-down")
    assert stack.compose("ps", "-q").stdout.strip() == ""
    volumes = stack.engine.docker("volume", "ls", "-q").stdout.split()
    assert {f"{stack.project}_{pg}-data" for pg in SHARD_DBS} <= set(volumes), "docker-down keeps the volumes"
    await asyncio.to_thread(stack.make, "docker-up")
    for hour, counted in before.items():
        await exact(stack, hour, counted, deadline_s=30.0)


def render(stack: ComposeStack) -> None:
    """The step of docs/operations.md (Docker compose): both files rendered again from docker/shards.json."""
    for command, target in [("render-compose", "docker-compose.yml"), ("render-nginx", "docker/nginx.conf")]:
        text = stack.run([str(VENV / "bin" / "python"), "-m", "sharding", command, "--shards-file",
                          "docker/shards.json"]).stdout
        (stack.project_dir / target).write_text(text)


def users_of(ring: Ring, writer: str, prefix: str, count: int) -> list[str]:
    found: list[str] = []
    while len(found) < count:
        user = f"{prefix}-{os.urandom(4).hex()}"
        if ring.lookup(user) == f"{writer}:8080":
            found.append(user)
    return found


async def every_aggregator_reads(stack: ComposeStack, shard: str) -> bool:
    async with aiohttp.ClientSession() as session:
        for agg in AGGREGATORS:
            async with session.get(f"http://{stack.address(agg)}:8080/shards") as answer:
                if f'"{shard}"' not in await answer.text():
                    return False
    return True


async def test_a_shard_added_with_the_readmes_compose_steps(stack: ComposeStack) -> None:
    shards_file = stack.project_dir / "docker" / "shards.json"
    topology = json.loads(shards_file.read_text())
    topology["shards"].append({"name": "d", "writers": ["writer-d:8080"],
                               "dsn": "postgresql://postgres@pg-d:5432/reactions", "state": "active"})
    shards_file.write_text(json.dumps(topology, indent=2) + "\n")
    hour = current_hour()
    before = (await current_counts(stack, [hour]))[hour]
    render(stack)
    stack.compose("up", "-d", "--wait", "pg-d", "writer-d", timeout_s=300)
    stack.compose("up", "-d", "--wait", *AGGREGATORS, timeout_s=300)
    await wait_until(lambda: every_aggregator_reads(stack, "d"), "every aggregator reads shard d", 60, poll_s=0.5)
    stack.compose("exec", "-T", "nginx", "nginx", "-e", "stderr", "-c", "/etc/reactions/nginx.conf", "-s", "reload")
    ring = Ring.build([f"{w}:8080" for w in [*WRITERS, "writer-d"]])
    probes: list[str] = []

    async def lands_on_d() -> bool:
        probes.extend(users_of(ring, "writer-d", "probe", 1))
        async with aiohttp.ClientSession() as session:
            assert await post(session, f"{stack.base_url}/analytics?timestamp={now_ms()}&user={probes[-1]}&click") \
                == 204
        return await rows_of(stack, "pg-d", probes[-1]) == 1
    await wait_until(lands_on_d, "nginx (reloaded) sends shard d's users to writer-d", 30, poll_s=0.5)
    users = users_of(ring, "writer-d", "d", 10)
    async with aiohttp.ClientSession() as session:
        for user in users:
            assert await post(session, f"{stack.base_url}/analytics/{now_ms()}/{user}/impression") == 204
    assert [await rows_of(stack, "pg-d", u) for u in users] == [1] * len(users)
    await exact(stack, hour, HourCounts(before.unique_users + len(probes) + len(users), before.clicks + len(probes),
                                        before.impressions + len(users)))
