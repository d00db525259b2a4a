"""The aggregator's Prometheus metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from common.metrics import LATENCY_BUCKETS_S, Counter, Histogram, Registry

# How a GET was answered: the live hour from memory (fresh or stale), a cached
# past hour, a past hour computed now (miss), or a future hour (never cached).
READ_KINDS = ("live", "live_stale", "past", "miss", "future")


@dataclass
class AggregatorMetrics:
    registry: Registry
    reads: Counter
    refused: Counter
    shard_errors: Counter
    fanout_seconds: Histogram
    refresh_seconds: Histogram
    invalidations: Counter
    # time.monotonic() of the last refresh in which every shard answered.
    last_complete_refresh: float = field(default_factory=time.monotonic)

    @classmethod
    def create(cls) -> AggregatorMetrics:
        r = Registry()
        metrics = cls(
            registry=r,
            reads=r.counter("reactions_read_requests_total", "GET /analytics answered, by how.", ["kind"]),
            refused=r.counter("reactions_read_refused_total", "GET /analytics answered 400 or 503.", ["status"]),
            shard_errors=r.counter("reactions_shard_errors_total", "Shard reads that failed or timed out.",
                                   ["shard"]),
            fanout_seconds=r.histogram("reactions_fanout_seconds", "Cold read of one hour from every shard.",
                                       LATENCY_BUCKETS_S),
            refresh_seconds=r.histogram("reactions_refresh_seconds", "One background refresh.", LATENCY_BUCKETS_S),
            invalidations=r.counter("reactions_past_invalidations_total", "Cached past hours dropped, by cause.",
                                    ["cause"]),
        )
        for kind in READ_KINDS:
            metrics.reads.inc(0, kind)
        r.gauge("reactions_refresh_lag_seconds", "Time since the last refresh in which every shard answered.",
                lambda: time.monotonic() - metrics.last_complete_refresh)
        return metrics
