"""``python -m sharding run`` as a user runs it: foreground, one per DATA_DIR, clean stop, data kept."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import aiohttp
import pytest

from sharding.config import load
from sharding.local.cluster import LocalCluster
from sharding.local.processes import alive, start_ticks
from sharding.local.settings import ClusterSettings
from tests.support.cluster import REPO_ROOT, cli_env, free_base_port, own_past_hour_ts, post, wait_counts
from tests.support.passwords import session_passfile
from tests.support.run_command import RunCommand
from tests.support.tmpdirs import world_traversable_tmpdir


@pytest.fixture
def run_command() -> Iterator[RunCommand]:
    root = world_traversable_tmpdir("reactions-run-")
    cluster = LocalCluster(ClusterSettings(port=free_base_port(), data_dir=root / "data",
                                           passfile=session_passfile()))
    command = RunCommand(cluster, root / "run.out")
    yield command
    if command.proc is not None and command.proc.poll() is None:
        command.stop()
    cluster.stop()  # whatever a failed run left behind, by recorded pid


def cluster_pids(cluster: LocalCluster) -> list[tuple[int, int]]:
    """(pid, start time) of every part: recorded processes and each shard's postmaster."""
    pids = [(r.pid, r.started) for r in cluster.registry.all()]
    for shard in load(cluster.shards_file).shards:
        pg_pid = cluster.postgres(shard).pid()
        started = start_ticks(pg_pid) if pg_pid else None
        assert pg_pid is not None and started is not None, f"postgres-{shard.name} is running"
        pids.append((pg_pid, started))
    return pids


async def test_run_is_alone_stops_cleanly_and_keeps_data(run_command: RunCommand) -> None:
    cluster, ts = run_command.cluster, own_past_hour_ts()
    base = f"http://127.0.0.1:{cluster.settings.port}"
    run_command.start()
    for name in ("writer-a", "aggregator-1", "nginx", "postgres-a"):
        assert name in run_command.text()

    second = subprocess.run([sys.executable, "-m", "sharding", "run"], cwd=REPO_ROOT, env=cli_env(cluster),
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"a cluster is already running from DATA_DIR={cluster.root}" in second.stderr

    async with aiohttp.ClientSession() as session:
        assert await post(session, f"{base}/analytics?timestamp={ts}&user=kept&click") == 204
        await wait_counts(session, base, ts, (1, 1, 0))
    pids = cluster_pids(cluster)

    assert run_command.stop(signal.SIGTERM) == 0
    assert "stopped." in run_command.text()
    assert not [pid for pid, started in pids if start_ticks(pid) == started], "every part stopped"
    assert cluster.registry.all() == []

    run_command.start()
    async with aiohttp.ClientSession() as session:
        await wait_counts(session, base, ts, (1, 1, 0))
    assert run_command.stop(signal.SIGINT) == 0
    assert not any(alive(r) for r in cluster.registry.all())
    assert all(cluster.postgres(s).pid() is None for s in load(cluster.shards_file).shards)
