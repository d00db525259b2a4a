"""How make chaos measures the settling of unknown outcomes (tests/faults/settle.py), on made-up histories."""

from __future__ import annotations

from tests.faults.record import AuditRecord, Sent
from tests.faults.settle import SettleWatch

SHARDS = ["a", "b"]


def event(attempts: list[float], ambiguous: list[float], acked_at: float | None = None) -> tuple[SettleWatch, Sent]:
    record = AuditRecord("p-")
    sent = record.new_event(0, "p-u1", "click")
    sent.attempted_at, sent.ambiguous_at, sent.acked_at = attempts, ambiguous, acked_at
    return SettleWatch(record, SHARDS), sent


def seen(watch: SettleWatch, sent: Sent, shard: str, rows: int, at: float) -> None:
    """A poll of ``shard`` that started at ``at`` and took 0.1 s."""
    watch.note(shard, [sent], {f"{sent.user} {sent.key}": rows} if rows else {}, at, at + 0.1)


def test_a_row_that_appears_long_after_the_unknown_answer_with_no_retry_is_a_late_settle() -> None:
    watch, sent = event([10.0], [12.2])
    seen(watch, sent, "a", 0, 12.3)
    seen(watch, sent, "a", 0, 22.0)
    seen(watch, sent, "a", 1, 22.3)
    report = watch.report()
    assert (report.unknown_answers, report.late_changes) == (1, 1)
    assert abs(report.settled_s - 10.2) < 1e-9
    assert "settled within 10.2s" in report.line()


def test_a_row_that_a_retry_explains_is_not_a_late_settle() -> None:
    watch, sent = event([10.0, 12.3], [12.2])
    seen(watch, sent, "a", 0, 12.25)
    seen(watch, sent, "a", 1, 12.5)
    assert (watch.report().late_changes, watch.report().settled_s) == (0, 0.0)


def test_a_row_stored_before_the_answer_is_settled_at_once() -> None:
    watch, sent = event([10.0], [11.0])
    seen(watch, sent, "a", 1, 11.1)
    seen(watch, sent, "a", 1, 11.4)
    report = watch.report()
    assert (report.unknown_answers, report.late_changes, report.settled_s) == (1, 0, 0.0)


def test_a_second_row_after_the_retry_was_acknowledged_is_late() -> None:
    """The double count the settle bound rules out: the first attempt commits after its retry elsewhere did."""
    watch, sent = event([10.0, 12.3], [12.2], acked_at=12.4)
    seen(watch, sent, "b", 0, 12.25)
    seen(watch, sent, "b", 1, 12.5)  # the retry, acknowledged
    seen(watch, sent, "a", 0, 12.25)
    seen(watch, sent, "a", 0, 19.8)
    seen(watch, sent, "a", 1, 20.0)  # the first attempt, late
    report = watch.report()
    assert report.late_changes == 1 and abs(report.settled_s - 7.9) < 1e-9


def test_a_shard_that_does_not_answer_keeps_what_was_last_seen_of_it() -> None:
    """A frozen shard's poll fails: its rows when it answers again count from the last poll that saw it."""
    watch, sent = event([10.0, 11.5], [11.0], acked_at=11.6)
    seen(watch, sent, "a", 0, 11.05)  # a is about to freeze
    seen(watch, sent, "b", 1, 11.7)  # the retry went to b
    seen(watch, sent, "a", 1, 21.0)  # a thawed: the first attempt became visible at some point since 11.05
    assert watch.report().late_changes == 0  # not told apart from the retry: absent only before the ack
