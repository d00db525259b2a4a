"""Rendering a Prometheus configuration from the shard file (pure: no I/O).

Every active shard's writers and every aggregator become scrape targets, so
that Prometheus follows the topology as nginx does: render again after
``add-shard``, ``retire-shard`` or ``add-aggregator`` and reload Prometheus.
A retired shard's writers are stopped, so they are no target (its data is
read through the aggregators, which are).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sharding.config import ConfigError, Topology

# The job names the alerting rules (monitoring/rules.yml) select on.
WRITER_JOB = "reactions_writer"
AGGREGATOR_JOB = "reactions_aggregator"
# Scrape and rule evaluation period: a few times the aggregators' 1 s refresh,
# short enough that a stale live hour (more than 2 s behind) is seen within seconds.
DEFAULT_INTERVAL = "5s"


@dataclass(frozen=True)
class ScrapeLayout:
    """How this Prometheus scrapes: its period, and where it finds the alerting rules."""

    rules_file: str = "rules.yml"  # relative paths are taken from the configuration file's folder
    interval: str = DEFAULT_INTERVAL


def quoted(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    return json.dumps(text)


def writer_groups(topology: Topology) -> list[str]:
    """One static group per active shard, labelled with the shard's name."""
    return [f"      - targets: [{', '.join(quoted(w) for w in shard.writers)}]\n"
            f"        labels: {{shard: {quoted(shard.name)}}}"
            for shard in topology.active_shards if shard.writers]


def render(topology: Topology, layout: ScrapeLayout | None = None, shards_file: str = "shard file") -> str:
    """prometheus.yml for this topology."""
    layout = layout if layout is not None else ScrapeLayout()
    writers = writer_groups(topology)
    if not writers:
        raise ConfigError("no active shard has a writer: there would be no writer to scrape")
    if not topology.aggregators:
        raise ConfigError("no aggregators: there would be no aggregator to scrape")
    aggregators = ", ".join(quoted(a) for a in topology.aggregators)
    return "\n".join([
        f"# Rendered from {shards_file} by `python -m sharding render-prometheus`: render again, do not edit.",
        "global:",
        f"  scrape_interval: {layout.interval}",
        f"  evaluation_interval: {layout.interval}",
        "rule_files:",
        f"  - {quoted(layout.rules_file)}",
        "scrape_configs:",
        f"  - job_name: {WRITER_JOB}",
        "    static_configs:",
        *writers,
        f"  - job_name: {AGGREGATOR_JOB}",
        "    static_configs:",
        f"      - targets: [{aggregators}]",
        "",
    ])
