"""The Prometheus configuration rendered from the shard file, and the alerting rules.

promtool (Debian's prometheus package, scripts/system-deps.sh) checks the
configuration and the rules, and runs the rules' unit tests
(monitoring/rules_test.yml). A real Prometheus against a running cluster:
tests/e2e/test_monitoring.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sharding import prometheus
from sharding.config import ConfigError, Shard, Topology, load

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMTOOL = "promtool"

TOPOLOGY = Topology(
    shards=(
        Shard("a", ("127.0.0.1:8101",), "postgresql://postgres@127.0.0.1:8301/reactions"),
        Shard("b", ("127.0.0.1:8102", "127.0.0.1:8112"), "postgresql://postgres@127.0.0.1:8302/reactions"),
        Shard("c", ("127.0.0.1:8103",), "postgresql://postgres@127.0.0.1:8303/reactions", state="retired"),
    ),
    aggregators=("127.0.0.1:8201", "127.0.0.1:8202"),
)


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def scrape_jobs(text: str) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    return {job["job_name"]: job["static_configs"] for job in yaml.safe_load(text)["scrape_configs"]}


def test_every_active_writer_with_its_shard_and_every_aggregator_is_a_target() -> None:
    jobs = scrape_jobs(prometheus.render(TOPOLOGY))
    assert jobs[prometheus.WRITER_JOB] == [
        {"targets": ["127.0.0.1:8101"], "labels": {"shard": "a"}},
        {"targets": ["127.0.0.1:8102", "127.0.0.1:8112"], "labels": {"shard": "b"}},
    ], "a retired shard's writers are stopped: no target"
    assert jobs[prometheus.AGGREGATOR_JOB] == [{"targets": ["127.0.0.1:8201", "127.0.0.1:8202"]}]


def test_rules_file_and_interval_are_rendered() -> None:
    config = yaml.safe_load(prometheus.render(TOPOLOGY, prometheus.ScrapeLayout("/x/rules.yml", "1s")))
    assert config["rule_files"] == ["/x/rules.yml"]
    assert config["global"] == {"scrape_interval": "1s", "evaluation_interval": "1s"}


@pytest.mark.parametrize("topology", [
    Topology(shards=TOPOLOGY.shards[2:], aggregators=TOPOLOGY.aggregators),
    Topology(shards=TOPOLOGY.shards[:1]),
])
def test_a_topology_without_writers_or_aggregators_is_refused(topology: Topology) -> None:
    with pytest.raises(ConfigError):
        prometheus.render(topology)


def test_committed_configuration_is_rendered_from_the_default_cluster_shard_file() -> None:
    rendered = subprocess.run(
        [sys.executable, "-m", "sharding", "render-prometheus", "--shards-file", "monitoring/shards.json"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert (MONITORING / "prometheus.yml").read_text() == rendered, \
        "run: python -m sharding render-prometheus --shards-file monitoring/shards.json > monitoring/prometheus.yml"
    assert len(load(MONITORING / "shards.json").shards) == 3, "the default make run: 3 shards"


def test_promtool_accepts_the_configuration_and_its_rules() -> None:
    result = promtool("check", "config", "monitoring/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules.yml" in result.stdout, "the configuration loads the rules"


def test_promtool_accepts_a_configuration_rendered_with_an_absolute_rules_path(tmp_path: Path) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus.render(TOPOLOGY, prometheus.ScrapeLayout(str(MONITORING / "rules.yml"))))
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", "monitoring/rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_fires_on_its_symptom_and_not_on_health() -> None:
    """monitoring/rules_test.yml: for each alert, input series that trigger it beside healthy ones."""
    result = promtool("test", "rules", "rules_test.yml", cwd=MONITORING)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {t["alertname"] for case in yaml.safe_load((MONITORING / "rules_test.yml").read_text())["tests"]
              for t in case["alert_rule_test"]}
    defined = {r["alert"] for g in yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"] for r in g["rules"]}
    assert tested == defined, "every alert has a unit test"
