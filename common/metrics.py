"""What both services' metrics share: a registry per app and its exposition.

The metrics themselves are prometheus-client's (writer/metrics.py and
aggregator/metrics.py define them). Each app gets a registry of its own, not
the library's global one, because the tests build many apps in one process
and a name may be registered only once per registry.
"""

from __future__ import annotations

import prometheus_client
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, PlatformCollector, ProcessCollector

# Buckets for request-scale latencies: a live read is sub-millisecond, a commit
# a few milliseconds, and the shard timeout is 2 s, so 2.5 s bounds them all.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def new_registry() -> CollectorRegistry:
    """A registry with the process's CPU, memory and file descriptors (process_*) and python_info."""
    # A *_created sample per counter and histogram doubles the page for a value
    # nothing here alerts on; process start time is in process_start_time_seconds.
    prometheus_client.disable_created_metrics()
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> web.Response:
    """The registry in Prometheus's text format, as ``GET /metrics`` answers it."""
    return web.Response(body=prometheus_client.generate_latest(registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})
