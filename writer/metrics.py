"""The writer's Prometheus metrics."""

from __future__ import annotations

from dataclasses import dataclass

from common.metrics import LATENCY_BUCKETS_S, Counter, Histogram, Registry

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass
class WriterMetrics:
    registry: Registry
    accepted: Counter
    rejected: Counter
    overloaded: Counter
    refused: Counter
    unknown: Counter
    batches: Counter
    failed_batches: Counter
    batch_size: Histogram
    commit_seconds: Histogram

    @classmethod
    def create(cls) -> WriterMetrics:
        r = Registry()
        return cls(
            registry=r,
            accepted=r.counter("reactions_events_committed_total", "Events committed and answered 204."),
            rejected=r.counter("reactions_events_rejected_total", "Requests answered 400, by reason.", ["reason"]),
            overloaded=r.counter("reactions_events_overloaded_total", "Requests answered 503 (queue full, draining)."),
            refused=r.counter("reactions_events_not_stored_total",
                              "Requests answered 503: certainly not stored (database down, rolled back, too slow)."),
            unknown=r.counter("reactions_events_outcome_unknown_total",
                              "Requests answered 504 with X-Reactions-Outcome: unknown (commit sent, answer lost)."),
            batches=r.counter("reactions_batches_total", "Batches committed."),
            failed_batches=r.counter("reactions_batches_failed_total", "Batches whose commit failed (503 or unknown)."),
            batch_size=r.histogram("reactions_batch_size_events", "Events per committed batch.", BATCH_SIZE_BUCKETS),
            commit_seconds=r.histogram("reactions_commit_seconds", "Time to commit one batch.", LATENCY_BUCKETS_S),
        )

    def on_commit(self, size: int, seconds: float) -> None:
        self.accepted.inc(size)
        self.batches.inc()
        self.batch_size.observe(size)
        self.commit_seconds.observe(seconds)

    def on_failure(self, size: int, exc: BaseException) -> None:
        self.failed_batches.inc()
