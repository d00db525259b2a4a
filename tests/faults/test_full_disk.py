"""A full disk refuses cleanly: shard b's data directory on a small tmpfs, filled under the audit load.

Its own cluster under a real ``python -m sharding run`` (whose supervisor
restarts the shard's PostgreSQL after the WAL PANIC). Root only: it mounts a
tmpfs, and always unmounts it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharding.local.cluster import LocalCluster
from sharding.local.settings import ClusterSettings
from tests.faults.audit import assert_clean
from tests.faults.full_disk import FULL, disk_full
from tests.faults.scenario import run_scenario
from tests.support.cluster import free_base_port
from tests.support.passwords import session_passfile
from tests.support.run_command import RunCommand, processes_of
from tests.support.tmpdirs import world_traversable_tmpdir
from tests.support.tmpfs import is_mounted, require_root, tmpfs

# A fresh shard's data directory takes about 50 MB (initdb, the database, a
# WAL segment or two); the rest is filled by the test.
DISK_MB = 160


@pytest.fixture
def small_disk_cluster() -> Iterator[tuple[LocalCluster, Path]]:
    """A supervised cluster of 3 shards whose shard b's data directory is on its own tmpfs."""
    require_root()
    root = world_traversable_tmpdir("reactions-full-disk-")
    cluster = LocalCluster(ClusterSettings(port=free_base_port(), data_dir=root / "data", passfile=session_passfile()))
    command = RunCommand(cluster, root / "run.out", shards=3, aggregators=2)
    with tmpfs(root / "disk", DISK_MB) as disk:
        (disk / "pgdata").mkdir()
        (cluster.root / "pg").mkdir(parents=True)
        (cluster.root / "pg" / FULL).symlink_to(disk / "pgdata")
        try:
            command.start()
            yield cluster, disk
        finally:
            if command.proc is not None and command.proc.poll() is None:
                command.stop()
            cluster.stop()
            assert not processes_of(cluster), "processes of the cluster left running"
    assert not is_mounted(root / "disk")


async def test_a_full_disk_refuses_cleanly_and_writes_come_back(small_disk_cluster: tuple[LocalCluster, Path]) -> None:
    cluster, disk = small_disk_cluster
    outcome = await run_scenario(cluster, "disk full", functools.partial(disk_full, disk=disk))
    report = outcome.report
    print(f"\n{report.line()}\n  notes: {outcome.notes}")
    assert outcome.fault_error is None, outcome.fault_error
    assert_clean(report)
    assert report.acknowledged > 0 and report.counted >= report.acknowledged
