"""The audit record's bounds, without a cluster."""

from __future__ import annotations

import time

from perf.ledger import HourCounts
from tests.faults.record import AuditRecord, Outcome

HOUR = 400_000
TS = HOUR * 3_600_000


def test_final_bounds_allow_only_events_without_an_answer() -> None:
    record = AuditRecord("t-")
    acked, lost_answer, refused, retried = (record.new_event(TS, u, e) for u, e in
                                             [("a", "click"), ("b", "click"), ("c", "impression"), ("d", "impression")])
    for sent in (acked, lost_answer, refused, retried):
        record.on_attempt(sent)
    record.on_ack(acked)
    lost_answer.ambiguous = 1
    refused.refusals.append("503 writer")
    retried.ambiguous = 1
    record.on_attempt(retried)
    record.on_ack(retried)
    record.baseline[HOUR] = HourCounts(10, 1, 1)
    assert [s.outcome for s in (acked, lost_answer, refused, retried)] == [
        Outcome.ACKED, Outcome.UNANSWERED, Outcome.REFUSED, Outcome.ACKED]
    bounds = record.final_bounds(HOUR)
    assert bounds.low == HourCounts(12, 2, 2)
    assert bounds.high == HourCounts(13, 3, 3)  # b may be stored; d may be stored twice (another shard)
    assert bounds.holds(HourCounts(12, 2, 2)) and not bounds.holds(HourCounts(14, 2, 2))
    assert record.retried_after_no_answer == 1
    assert record.ledger(Outcome.ACKED).expected(HOUR) == HourCounts(2, 1, 1)


def test_live_bounds_lag_by_the_staleness_bound_and_never_exceed_what_was_sent() -> None:
    record = AuditRecord("t-")
    early, late, pending = (record.new_event(TS, u, "click") for u in "abc")
    for sent in (early, late, pending):
        record.on_attempt(sent)
    record.on_ack(early)
    cutoff = time.monotonic()
    record.on_ack(late)
    bounds = record.live_bounds(HOUR, cutoff)
    assert bounds.low == HourCounts(1, 1, 0)  # only what was acknowledged before the cutoff must show
    assert bounds.high == HourCounts(3, 3, 0)  # everything sent may show
