"""A real Prometheus on the configuration a running cluster keeps (DATA_DIR/prometheus.yml).

Prometheus gets its own port and its own data directory in a temporary
folder, and is stopped by its pid. Checked through its HTTP API: every writer
and aggregator is a target and up, the rules are loaded, and a stopped writer
raises ReactionsTargetDown. promtool lints the services' real /metrics pages.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from sharding import prometheus
from sharding.local.cluster import LocalCluster
from sharding.local.processes import ProcessRecord, alive, free_port, http_get, spawn, stop, wait_ready
from tests.support.cluster import topology
from tests.support.tmpdirs import world_traversable_tmpdir
from tests.waiting import wait_until

PROMETHEUS_BIN = "prometheus"
# The cluster's configuration scrapes every 5 s: a few scrapes on a busy machine.
TARGETS_DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def prometheus_url(cluster: LocalCluster) -> Iterator[str]:
    """Prometheus on the cluster's own prometheus.yml, stopped by pid at the end."""
    root = world_traversable_tmpdir("reactions-prometheus-")
    port = free_port()
    argv = [PROMETHEUS_BIN, f"--config.file={cluster.prometheus_conf}", f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    record = spawn("prometheus", "prometheus", argv, port=port, log=root / "prometheus.log", env={}, cwd=root)
    try:
        wait_ready(record, "/-/ready", timeout_s=TARGETS_DEADLINE_S)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(record)
        shutil.rmtree(root, ignore_errors=True)


async def api(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert body["status"] == "success", body
    return body["data"]


def expected_targets(cluster: LocalCluster) -> set[tuple[str, str]]:
    current = topology(cluster)
    writers = {(prometheus.WRITER_JOB, w) for shard in current.active_shards for w in shard.writers}
    return writers | {(prometheus.AGGREGATOR_JOB, a) for a in current.aggregators}


async def targets_by_health(base: str) -> dict[tuple[str, str], str]:
    data = await api(f"{base}/api/v1/targets?state=active")
    return {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in data["activeTargets"]}


async def test_every_writer_and_aggregator_is_a_target_and_up(cluster: LocalCluster, prometheus_url: str) -> None:
    expected = expected_targets(cluster)
    assert len(expected) == 5, "3 writers and 2 aggregators"
    seen: dict[tuple[str, str], str] = {}

    async def all_up() -> bool:
        seen.update(await targets_by_health(prometheus_url))
        return set(seen) == expected and set(seen.values()) == {"up"}

    await wait_until(all_up, f"every target up (last seen: {seen})", deadline_s=TARGETS_DEADLINE_S, poll_s=0.5)
    # The services' own metrics reached Prometheus, with the shard label on writers.
    result = await api(f"{prometheus_url}/api/v1/query?query=reactions_events_pending")
    assert {r["metric"]["shard"] for r in result["result"]} == {s.name for s in topology(cluster).active_shards}


async def test_the_alerting_rules_are_loaded(prometheus_url: str) -> None:
    data = await api(f"{prometheus_url}/api/v1/rules")
    rules = [r for group in data["groups"] for r in group["rules"]]
    assert {r["name"] for r in rules} >= {"ReactionsTargetDown", "ReactionsShardUnreachable", "ReactionsLiveHourStale",
                                         "ReactionsAggregatorBehindOnRefresh", "ReactionsWriterOverloaded",
                                         "ReactionsWriterCommitsFailing"}
    assert {r["health"] for r in rules} <= {"ok", "unknown"}, [r for r in rules if r["health"] == "err"]


async def test_a_stopped_writer_raises_target_down(cluster: LocalCluster, prometheus_url: str) -> None:
    record = next(r for r in cluster.registry.all("writer"))
    try:
        assert stop(record), "the writer stopped on SIGTERM"

        async def alerting() -> bool:
            alerts = (await api(f"{prometheus_url}/api/v1/alerts"))["alerts"]
            return any(a["labels"]["alertname"] == "ReactionsTargetDown"
                       and a["labels"]["instance"] == record.address for a in alerts)

        await wait_until(alerting, f"ReactionsTargetDown for {record.address}", deadline_s=TARGETS_DEADLINE_S,
                         poll_s=0.5)
    finally:
        restart_writer(cluster, record)


def restart_writer(cluster: LocalCluster, record: ProcessRecord) -> None:
    if alive(record):
        return
    cluster.registry.remove(record.name)
    for started in cluster.start_writers(topology(cluster).shard(record.shard or "")):
        wait_ready(started)


@pytest.mark.parametrize("role", ["writer", "aggregator"])
def test_promtool_accepts_a_real_metrics_page(cluster: LocalCluster, role: str) -> None:
    record = next(r for r in cluster.registry.all(role) if alive(r))
    status, headers, page = http_get(f"http://{record.address}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    assert "reactions_" in page and "process_cpu_seconds_total" in page and "process_open_fds" in page
    result = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
