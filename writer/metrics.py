"""The writer's Prometheus metrics: the one place they are defined."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.events import REJECTION_CODES
from common.metrics import LATENCY_BUCKETS_S, new_registry

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# Where a late event was refused: by the writer (never sent) or by PostgreSQL (rolled back).
LATE_WHERE = ("writer", "database")


@dataclass
class WriterMetrics:
    registry: CollectorRegistry
    accepted: Counter
    rejected: Counter
    overloaded: Counter
    refused: Counter
    unknown: Counter
    database_up: Gauge
    batches: Counter
    failed_batches: Counter
    batch_size: Histogram
    commit_seconds: Histogram
    pending: Gauge
    part_events: Counter
    late: Counter
    clock_skew: Gauge
    clock_skew_margin: Gauge
    write_budget: Gauge

    @classmethod
    def create(cls) -> WriterMetrics:
        r = new_registry()
        metrics = cls(
            registry=r,
            accepted=Counter("reactions_events_committed_total", "Events committed and answered 204.", registry=r),
            rejected=Counter("reactions_events_rejected_total", "Requests answered 400, by reason code.",
                             ["reason"], registry=r),
            overloaded=Counter("reactions_events_overloaded_total", "Requests answered 503 (queue full, draining).",
                               registry=r),
            refused=Counter("reactions_events_not_stored_total",
                            "Requests answered 503: certainly not stored (database down, rolled back, too slow).",
                            registry=r),
            unknown=Counter("reactions_events_outcome_unknown_total",
                            "Requests answered 504 with X-Reactions-Outcome: unknown (commit sent, answer lost).",
                            registry=r),
            database_up=Gauge("reactions_database_up", "1 while the shard's database commits.", registry=r),
            batches=Counter("reactions_batches_total", "Batches committed.", registry=r),
            failed_batches=Counter("reactions_batches_failed_total", "Batches whose commit failed (503 or unknown).",
                                   registry=r),
            batch_size=Histogram("reactions_batch_size_events", "Events per committed batch.",
                                 buckets=BATCH_SIZE_BUCKETS, registry=r),
            commit_seconds=Histogram("reactions_commit_seconds", "Time to commit one batch.",
                                     buckets=LATENCY_BUCKETS_S, registry=r),
            pending=Gauge("reactions_events_pending", "Events accepted and waiting for their commit.", registry=r),
            part_events=Counter("reactions_batch_part_events_total",
                                "Events of batch parts this writer committed on its shard, by outcome.",
                                ["outcome"], registry=r),
            late=Counter("reactions_events_late_total",
                         "Events refused past their deadline (503, never stored): by the writer before sending,"
                         " or rolled back by PostgreSQL's commit guard.", ["where"], registry=r),
            clock_skew=Gauge("reactions_clock_skew_seconds",
                             "This writer's clock minus the peer's (nginx: from its stamps, an upper bound;"
                             " postgres: from the heartbeat).", ["peer"], registry=r),
            clock_skew_margin=Gauge("reactions_clock_skew_margin_seconds",
                                    "The clock skew the write deadline allows for.", registry=r),
            write_budget=Gauge("reactions_write_budget_seconds",
                               "How long after nginx's stamp a write may commit: settle - staleness - skew margin.",
                               registry=r),
        )
        for code in REJECTION_CODES:  # every series exists from the start, so rate() sees the first one
            metrics.rejected.labels(code)
        for where in LATE_WHERE:
            metrics.late.labels(where)
        for outcome in ("stored", "already_present", "not_stored", "unknown"):
            metrics.part_events.labels(outcome)
        return metrics

    def watch_clocks(self, skew: Callable[[str], float], peers: Sequence[str], margin_s: float,
                     budget_s: float) -> None:
        """Read each clock skew at each scrape (NaN before the first sample)."""
        for peer in peers:
            self.clock_skew.labels(peer).set_function(lambda peer=peer: skew(peer))  # type: ignore[misc]
        self.clock_skew_margin.set(margin_s)
        self.write_budget.set(budget_s)

    def watch_database(self, up: Callable[[], bool]) -> None:
        """Read the health probe's state at each scrape."""
        self.database_up.set_function(lambda: float(up()))

    def watch_pending(self, read: Callable[[], float]) -> None:
        """Read the pending events at each scrape (the committer exists only once the app starts)."""
        self.pending.set_function(read)

    def on_commit(self, size: int, seconds: float) -> None:
        self.accepted.inc(size)
        self.batches.inc()
        self.batch_size.observe(size)
        self.commit_seconds.observe(seconds)

    def on_failure(self, size: int, exc: BaseException) -> None:
        self.failed_batches.inc()
