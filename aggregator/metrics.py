"""The aggregator's Prometheus metrics: the one place they are defined."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.metrics import LATENCY_BUCKETS_S, new_registry

# How a GET was answered: the live hour from memory (fresh or stale), a cached
# past hour, a past hour computed now (miss), a future hour (never cached), or
# a series of hours (GET /analytics/series, one count per series).
READ_KINDS = ("live", "live_stale", "past", "miss", "future", "series")
# How a GET was refused: bad input, or an answer that would be incomplete.
REFUSED_STATUSES = ("400", "503")
# (shard name, state) -> 1 for every shard this aggregator reads.
ShardsRead = Callable[[], Mapping[tuple[str, str], float]]


class ShardReadCollector(Collector):
    """``reactions_shard_read{shard,state}``, read from the shard set at each scrape (it changes at run time)."""

    def __init__(self, read: ShardsRead) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("reactions_shard_read", "Shards this aggregator reads (1 each), by name and state.",
                                   labels=["shard", "state"])
        for (shard, state), value in sorted(self._read().items()):
            family.add_metric([shard, state], value)
        yield family


@dataclass
class AggregatorMetrics:
    registry: CollectorRegistry
    reads: Counter
    refused: Counter
    shard_errors: Counter
    fanout_seconds: Histogram
    series_fanout_seconds: Histogram
    refresh_seconds: Histogram
    invalidations: Counter
    refresh_lag: Gauge
    refresh_interval: Gauge
    live_max_lag: Gauge
    # The hot path's counter, bound once: a GET of the live hour adds to it without a label lookup.
    live_reads: Counter = field(init=False)
    # time.monotonic() of the last refresh in which every shard answered.
    last_complete_refresh: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.live_reads = self.reads.labels("live")
        for kind in READ_KINDS:
            self.reads.labels(kind)
        for status in REFUSED_STATUSES:
            self.refused.labels(status)
        self.refresh_lag.set_function(lambda: time.monotonic() - self.last_complete_refresh)

    @classmethod
    def create(cls) -> AggregatorMetrics:
        r = new_registry()
        return cls(
            registry=r,
            reads=Counter("reactions_read_requests_total", "GET /analytics and /analytics/series answered, by how.",
                          ["kind"], registry=r),
            refused=Counter("reactions_read_refused_total", "GET /analytics and /analytics/series answered 400 or 503.",
                            ["status"], registry=r),
            shard_errors=Counter("reactions_shard_errors_total", "Shard reads that failed or timed out.", ["shard"],
                                 registry=r),
            fanout_seconds=Histogram("reactions_fanout_seconds", "Cold read of one hour from every shard.",
                                     buckets=LATENCY_BUCKETS_S, registry=r),
            series_fanout_seconds=Histogram("reactions_series_fanout_seconds",
                                            "Cold read of the uncached hours of a series from every shard at once.",
                                            buckets=LATENCY_BUCKETS_S, registry=r),
            refresh_seconds=Histogram("reactions_refresh_seconds", "One background refresh.",
                                      buckets=LATENCY_BUCKETS_S, registry=r),
            invalidations=Counter("reactions_past_invalidations_total", "Cached past hours dropped, by cause.",
                                  ["cause"], registry=r),
            refresh_lag=Gauge("reactions_refresh_lag_seconds",
                              "Time since the last refresh in which every shard answered.", registry=r),
            refresh_interval=Gauge("reactions_refresh_interval_seconds", "How often the live hours are refreshed.",
                                   registry=r),
            live_max_lag=Gauge("reactions_live_max_lag_seconds",
                               "Live answers from a snapshot older than this are marked stale.", registry=r),
        )

    def publish_bounds(self, refresh_interval_s: float, live_max_lag_s: float) -> None:
        """The configured bounds, so that alerting rules compare the lag with them, not with a copied number."""
        self.refresh_interval.set(refresh_interval_s)
        self.live_max_lag.set(live_max_lag_s)

    def watch_shards(self, read: ShardsRead) -> None:
        """Publish the shards read, as ``read`` finds them at each scrape (the shard set exists once the app starts)."""
        self.registry.register(ShardReadCollector(read))
