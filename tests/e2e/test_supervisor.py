"""``run`` restarts what crashes, never what was stopped on purpose, and leaves nothing behind on Ctrl-C.

Real processes under a real ``python -m sharding run``; crashes are SIGKILLs
sent to the recorded pid (or the postmaster's pid file), never by name.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator

import aiohttp
import pytest

from sharding.config import load
from sharding.local.cluster import LocalCluster
from sharding.local.processes import ProcessRecord, alive, port_is_free
from sharding.local.settings import ClusterSettings
from tests.support.cluster import (
    base_url,
    counts,
    free_base_port,
    own_past_hour_ts,
    post,
    sharding_cli,
    unique_users,
    wait_counts,
)
from tests.support.passwords import session_passfile
from tests.support.run_command import RunCommand, processes_of, restart_lines
from tests.support.tmpdirs import world_traversable_tmpdir
from tests.waiting import wait_until

# Backoff (0.5 s) plus a writer's or PostgreSQL's start on a loaded machine.
RESTART_DEADLINE_S = 60.0


def new_run(shards: int, aggregators: int) -> RunCommand:
    root = world_traversable_tmpdir("reactions-supervised-")
    cluster = LocalCluster(ClusterSettings(port=free_base_port(), data_dir=root / "data",
                                           passfile=session_passfile()))
    return RunCommand(cluster, root / "run.out", shards=shards, aggregators=aggregators)


def finish(command: RunCommand) -> None:
    """Stop ``run``, then whatever a failed test left recorded."""
    if command.proc is not None and command.proc.poll() is None:
        command.stop()
    command.cluster.stop()


@pytest.fixture(scope="module")
def supervised() -> Iterator[RunCommand]:
    """One ``run`` of two shards and two aggregators, shared by the tests that crash one part each."""
    command = new_run(shards=2, aggregators=2)
    command.start()
    yield command
    finish(command)


@pytest.fixture
def own_run() -> Iterator[RunCommand]:
    """A ``run`` of one's own, for a test that stops it (not yet started)."""
    command = new_run(shards=1, aggregators=1)
    yield command
    finish(command)


def active_writer(cluster: LocalCluster) -> ProcessRecord:
    active = load(cluster.shards_file).active_shards[0].name
    record = next(r for r in cluster.registry.all("writer") if r.shard == active)
    assert alive(record), f"{record.name} runs before the test kills it"
    return record


def sigkill(record: ProcessRecord) -> None:
    assert alive(record), f"{record.name} (pid {record.pid}) is the recorded process"
    os.kill(record.pid, signal.SIGKILL)


async def ready(session: aiohttp.ClientSession, address: str) -> bool:
    try:
        async with session.get(f"http://{address}/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def wait_restarted(cluster: LocalCluster, old: ProcessRecord) -> ProcessRecord:
    """The part's new record, once it is another process than ``old`` and answers /readyz."""
    async with aiohttp.ClientSession() as session:
        async def back() -> bool:
            new = cluster.registry.get(old.name)
            return new is not None and new.pid != old.pid and alive(new) and await ready(session, new.address)
        await wait_until(back, f"{old.name} restarted by run and ready", RESTART_DEADLINE_S)
    new = cluster.registry.get(old.name)
    assert new is not None
    return new


async def restarts_in_status(cluster: LocalCluster, part: str) -> int:
    """The restart count ``status`` shows for ``part`` (its row must exist)."""
    result = await sharding_cli(cluster, "status")
    assert result.returncode == 0, result.stderr
    row = next((line for line in result.stdout.splitlines() if line.startswith(f"{part} ")), None)
    assert row is not None, f"no row for {part} in:\n{result.stdout}"
    found = re.search(r"(\d+)(?: \(last at [\d:]+; it (.+)\))?$", row)
    assert found is not None, row
    if int(found[1]):
        assert found[2] == "was killed by SIGKILL", row
    return int(found[1])


async def test_a_killed_writer_comes_back_and_serves(supervised: RunCommand) -> None:
    cluster, ts = supervised.cluster, own_past_hour_ts()
    old = active_writer(cluster)
    restarts_before = await restarts_in_status(cluster, old.name)
    logged_before = len(restart_lines(supervised.text(), old.name))
    sigkill(old)
    new = await wait_restarted(cluster, old)
    users = unique_users(20, "revived")
    async with aiohttp.ClientSession() as session:
        for user in users:  # straight to the restarted writer: it serves
            assert await post(session, f"http://{new.address}/analytics?timestamp={ts}&user={user}&click") == 204
        await wait_counts(session, base_url(cluster), ts, (20, 20, 0))
    logged = restart_lines(supervised.text(), old.name)
    assert len(logged) == logged_before + 1 and f"pid {new.pid}" in logged[-1], supervised.text()
    assert "was killed by SIGKILL" in logged[-1] and "next backoff" in logged[-1]
    assert await restarts_in_status(cluster, old.name) == restarts_before + 1


async def test_a_killed_aggregator_comes_back_and_serves(supervised: RunCommand) -> None:
    cluster, ts = supervised.cluster, own_past_hour_ts()
    old = cluster.registry.get("aggregator-1")
    assert old is not None
    restarts_before = await restarts_in_status(cluster, old.name)
    async with aiohttp.ClientSession() as session:
        for user in unique_users(10, "agg"):
            assert await post(session, f"{base_url(cluster)}/analytics/{ts}/{user}/impression") == 204
        await wait_counts(session, base_url(cluster), ts, (10, 0, 10))
        sigkill(old)
        new = await wait_restarted(cluster, old)
        assert await counts(session, f"http://{new.address}", ts) == (10, 0, 10)
    assert await restarts_in_status(cluster, old.name) == restarts_before + 1


async def test_a_killed_shard_postgres_comes_back_and_the_cluster_answers_exactly(supervised: RunCommand) -> None:
    cluster, ts = supervised.cluster, own_past_hour_ts()
    shard = load(cluster.shards_file).active_shards[0]
    pg, writer, part = cluster.postgres(shard), active_writer(cluster), f"postgres-{shard.name}"
    restarts_before = await restarts_in_status(cluster, part)
    first, second = unique_users(30, "pg-before"), unique_users(30, "pg-after")
    async with aiohttp.ClientSession() as session:
        for user in first:
            assert await post(session, f"{base_url(cluster)}/analytics?timestamp={ts}&user={user}&click") == 204
        await wait_counts(session, base_url(cluster), ts, (30, 30, 0))
        old_pid = pg.pid()
        assert old_pid is not None
        pg.kill()
        await wait_until(lambda: pg.pid() not in (None, old_pid), f"{part} restarted by run", RESTART_DEADLINE_S)
        await wait_until(lambda: ready(session, writer.address), f"{writer.name} ready again", RESTART_DEADLINE_S)
        for user in first + second:
            assert await post(session, f"{base_url(cluster)}/analytics?timestamp={ts}&user={user}&impression") == 204
        await wait_counts(session, base_url(cluster), ts, (60, 30, 60))
    assert alive(writer), "the shard's writer rode out its database's crash"
    assert await restarts_in_status(cluster, part) == restarts_before + 1


async def test_a_retired_shards_writer_is_not_restarted(supervised: RunCommand) -> None:
    cluster = supervised.cluster
    active = load(cluster.shards_file).active_shards
    assert len(active) >= 2, "a shard can be retired while another takes the writes"
    victim = active[-1]
    retired = next(r for r in cluster.registry.all("writer") if r.shard == victim.name)
    result = await sharding_cli(cluster, "retire-shard", victim.name)
    assert result.returncode == 0, result.stderr
    # A crash after the retirement, restarted: run has looked at every part since.
    other = active_writer(cluster)
    sigkill(other)
    await wait_restarted(cluster, other)
    assert cluster.registry.get(retired.name) is None
    assert not alive(retired) and port_is_free(retired.port), f"nothing serves {retired.address}"
    assert f"{retired.name} (pid" not in supervised.text() and not restart_lines(supervised.text(), retired.name)


async def test_ctrl_c_stops_everything_restarted_parts_too(own_run: RunCommand) -> None:
    cluster = own_run.cluster
    own_run.start()
    old = active_writer(cluster)
    sigkill(old)
    await wait_restarted(cluster, old)
    assert processes_of(cluster), "the probe finds the running cluster's processes"
    assert own_run.stop(signal.SIGINT) == 0
    assert "SIGINT: stopping" in own_run.text() and own_run.text().rstrip().endswith("stopped.")
    assert processes_of(cluster) == [], "no process of the cluster outlives run"
    assert cluster.registry.all() == []


async def test_ctrl_c_while_starting_leaves_no_process(own_run: RunCommand) -> None:
    cluster = own_run.cluster
    own_run.launch()
    await wait_until(lambda: bool(cluster.registry.directory.exists() and cluster.registry.all("writer")),
                     "run has started a writer", RESTART_DEADLINE_S)
    assert own_run.stop(signal.SIGINT) == 0
    assert "Reactions is up" not in own_run.text(), "the signal came while run was starting"
    assert own_run.text().rstrip().endswith("stopped.")
    assert processes_of(cluster) == [], "no process of the cluster outlives run"
    assert cluster.registry.all() == []
