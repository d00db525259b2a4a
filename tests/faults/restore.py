"""The restore drill: back up a shard while the load runs, let more writes land, restore it behind the same DSN.

The backup is a ``pg_dump`` of the running shard; the restore is the
procedure of docs/operations.md (Backup and restore): a new cluster on a side port that no writer knows, the
dump restored into it, a new schema UUID, then served on the shard's port.
Events acknowledged on that shard between the backup and the restore are
gone with the old database; the audit reports them as lost by the restore
(``Restore`` in tests/faults/record.py) and still requires everything else
to be counted exactly.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import replace
from pathlib import Path

import aiohttp

from sharding.config import load as load_topology
from sharding.local.cluster import LocalCluster
from sharding.local.postgres import LocalPostgres
from sharding.local.processes import alive, free_port
from tests.faults.faults import progress
from tests.faults.gray import (
    MARGIN_S,
    RECOVERY_S,
    client,
    complete_again,
    ready,
    shard_identities,
    stopped_shard,
    writer_of,
)
from tests.faults.load import Load
from tests.faults.record import Restore
from tests.waiting import wait_until

RESTORED = "b"
# Acknowledged events between the backup and the restore: writes the restore will lose.
ACKS_AFTER_BACKUP = 150


def backup(pg: LocalPostgres, dump: Path) -> None:
    """``pg_dump -Fc`` of the running shard: one consistent snapshot, taken as it starts."""
    client("pg_dump", pg, "-Fc", "-f", str(dump), "reactions")


def restore(pg: LocalPostgres, dump: Path) -> Path:
    """Replace the shard's database by the dump's, behind the same port; the old data directory, set aside."""
    old = pg.data_dir.with_name(pg.data_dir.name + ".before-restore")
    with stopped_shard(pg):
        shutil.move(pg.data_dir, old)
        # A free port, not the next one: in a local cluster that is another shard's.
        side = replace(pg, port=free_port())
        side.start()  # a new initdb and database: nothing of the old one
        try:
            client("pg_restore", side, "-d", "reactions", str(dump))
            client("psql", side, "-d", "reactions", "-qc", "UPDATE schema_info SET shard_uuid = gen_random_uuid()")
        finally:
            side.stop()
    return old


async def restore_drill(cluster: LocalCluster, load: Load) -> list[str]:
    """Back up shard b, let ACKS_AFTER_BACKUP more events be acknowledged, restore b from the backup."""
    pg = cluster.postgres(load_topology(cluster.shards_file).shard(RESTORED))
    dump = pg.data_dir.parent / f"{pg.data_dir.name}.dump"
    identities = await shard_identities(cluster, RESTORED)
    backup_at = time.monotonic()
    await asyncio.to_thread(backup, pg, dump)
    await progress(load, "after the backup", ACKS_AFTER_BACKUP)
    old = await asyncio.to_thread(restore, pg, dump)
    async with aiohttp.ClientSession() as session:
        aggregators = [r for r in cluster.registry.all("aggregator") if alive(r)]
        await wait_until(lambda: ready(session, writer_of(cluster, RESTORED).address), "shard b's writer back")
        restored_at = time.monotonic()

        async def all_see_new() -> bool:
            return all(i not in identities for i in await shard_identities(cluster, RESTORED))

        await wait_until(all_see_new, "every aggregator reads the restored database of shard b")
        await wait_until(lambda: complete_again(session, aggregators), "every answer complete again",
                         deadline_s=RECOVERY_S + MARGIN_S)
    load.record.restores.append(Restore(RESTORED, backup_at, restored_at))
    await progress(load, "after the restore")
    shutil.rmtree(old, ignore_errors=True)
    dump.unlink()
    return [f"shard {RESTORED} restored from a backup taken {restored_at - backup_at:.1f}s before it served again"]
