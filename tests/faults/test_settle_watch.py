"""How make chaos measures the settling of unknown outcomes (tests/faults/settle.py), on made-up histories."""

from __future__ import annotations

from tests.faults.record import AuditRecord
from tests.faults.settle import SettleWatch


def watch_of(attempts: list[float], ambiguous: list[float], changes: list[tuple[float, int]],
             acked_at: float | None = None) -> SettleWatch:
    record = AuditRecord("p-")
    sent = record.new_event(0, "p-u1", "click")
    sent.attempted_at, sent.ambiguous_at, sent.acked_at = attempts, ambiguous, acked_at
    watch = SettleWatch(record, ["shard-a"])
    watch.changes[(sent.key, "shard-a")] = changes
    return watch


def test_a_row_that_appears_long_after_the_unknown_answer_with_no_retry_is_a_late_settle() -> None:
    report = watch_of([10.0], [12.2], [(12.2, 0), (22.4, 1)]).report()
    assert (report.unknown_answers, report.late_changes) == (1, 1)
    assert abs(report.settled_s - 10.2) < 1e-9
    assert "settled within 10.2s" in report.line()


def test_a_row_that_a_retry_explains_is_not_a_late_settle() -> None:
    report = watch_of([10.0, 12.3], [12.2], [(12.2, 0), (12.5, 1)]).report()
    assert (report.late_changes, report.settled_s) == (0, 0.0)


def test_a_row_stored_before_the_answer_is_settled_at_once() -> None:
    report = watch_of([10.0], [11.0], [(11.0, 1)]).report()
    assert (report.unknown_answers, report.late_changes, report.settled_s) == (1, 0, 0.0)


def test_a_second_row_on_another_shard_after_the_retry_was_acknowledged_is_late() -> None:
    """The double count the settle bound rules out: the first attempt commits after its retry elsewhere did."""
    report = watch_of([10.0, 12.3], [12.2], [(12.2, 0), (12.5, 1), (20.0, 2)], acked_at=12.4).report()
    assert report.late_changes == 1 and abs(report.settled_s - 7.8) < 1e-9
    report = watch_of([10.0, 12.3], [12.2], [(12.2, 0), (12.5, 1)], acked_at=12.4).report()
    assert report.late_changes == 0  # the acknowledged retry's own row


def test_a_shard_that_does_not_answer_keeps_what_was_last_seen_of_it() -> None:
    record = AuditRecord("p-")
    sent = record.new_event(0, "p-u1", "click")
    sent.attempted_at, sent.ambiguous_at = [10.0], [11.0]
    watch = SettleWatch(record, ["a", "b"])
    watch.note("a", [sent], {})
    watch.note("b", [sent], {f"{sent.user} {sent.key}": 1})  # b answers only now, holding the row
    watch.note("a", [sent], {})
    assert watch.report().late_changes == 0
    watch.note("a", [sent], {f"{sent.user} {sent.key}": 1})  # a second row, on a, with no retry: late
    assert watch.report().late_changes == 1
