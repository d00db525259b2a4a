"""What the writers say about their batches (their /metrics), summed over a round."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Sequence

# Counters read from every writer's /metrics (Prometheus text, writer/metrics.py).
WRITER_COUNTERS = ("reactions_events_committed_total", "reactions_batches_total", "reactions_commit_seconds_sum")


def parse_counters(text: str, names: Sequence[str]) -> dict[str, float]:
    found = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] += float(value)
    return found


def writer_totals(addresses: Sequence[str]) -> dict[str, float]:
    """The counters summed over the writers (a writer that does not answer counts 0)."""
    totals = dict.fromkeys(WRITER_COUNTERS, 0.0)
    for address in addresses:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
            for name, value in parse_counters(resp.read().decode(), WRITER_COUNTERS).items():
                totals[name] += value
    return totals


def batch_details(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean events per committed batch and mean commit time (ms) between two readings."""
    events = after["reactions_events_committed_total"] - before["reactions_events_committed_total"]
    batches = after["reactions_batches_total"] - before["reactions_batches_total"]
    seconds = after["reactions_commit_seconds_sum"] - before["reactions_commit_seconds_sum"]
    if batches <= 0:
        return {}
    return {"events_per_batch": round(events / batches, 2), "commit_ms": round(seconds / batches * 1000, 2)}
