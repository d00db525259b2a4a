"""Backup and restore as a drill: a shard restored from its backup while the cluster runs and the audit load writes.

Every event acknowledged before the backup is counted; the events the
restore lost are only ones acknowledged on the restored shard after the
backup, and the audit names them; the aggregators notice the new database
by its identity and every answer is exact again.
"""

from __future__ import annotations

from sharding import nginx
from sharding.local.cluster import LocalCluster
from sharding.ring import Ring
from tests.faults.audit import assert_clean
from tests.faults.restore import RESTORED, restore_drill
from tests.faults.scenario import run_scenario
from tests.support.cluster import topology


async def test_a_shard_restored_from_its_backup_loses_only_what_came_after_it(cluster: LocalCluster) -> None:
    current = topology(cluster)
    ring = Ring.build(nginx.writer_addresses(current))
    owner = {w: s.name for s in current.active_shards for w in s.writers}
    outcome = await run_scenario(cluster, "restore drill", restore_drill)
    report = outcome.report
    print(f"\n{report.line()}\n  notes: {outcome.notes}\n  lost by the restore: {report.lost_by_restore[:5]} ...")
    assert outcome.fault_error is None, outcome.fault_error
    assert_clean(report)
    assert report.lost_by_restore, "the drill must lose the writes acknowledged after the backup"
    assert outcome.record is not None
    lost = [s for s in outcome.record.events if s.lost_by_restore]
    assert {owner[ring.lookup(s.user)] for s in lost} == {RESTORED}
    assert report.counted >= report.acknowledged - len(lost)
