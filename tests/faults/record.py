"""What the audit load sent and what it was told, event by event.

Every event carries an idempotency key of its own and keeps it through its
retries, so a retry that reaches the same shard is counted once. Each event
ends in one of three outcomes:

- ``ACKED``: some attempt got ``204``; the event must be counted, at least once;
- ``UNANSWERED``: no ``204``, and some attempt got no definite answer (a time-out,
  a reset connection, or an answer marked ``X-Reactions-Outcome: unknown``
  for a request that reached a writer); it may or may not be stored;
- ``REFUSED``: every attempt got a definite refusal (a plain 503, the
  writer's own or nginx's "no server answered", a 4xx, a connection that was
  never made); it must NOT be stored.

An attempt without a definite answer may have been stored on one shard while
the retry lands on another (a failover moves the user): keys are unique per
shard only. So an event is stored between ``acked`` and ``acked + ambiguous``
times, and the audit's bounds are exactly that.

The acknowledged, unanswered and refused events are also kept as
``perf.ledger.Ledger`` s, the benchmark's record of acknowledged writes.
"""

from __future__ import annotations

import bisect
import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from common.hours import hour_of
from perf.ledger import CLICK, IMPRESSION, HourCounts, Ledger


class Outcome(enum.Enum):
    ACKED = "acknowledged"
    UNANSWERED = "unanswered"
    REFUSED = "refused"


@dataclass
class Sent:
    """One event and what its attempts got."""

    key: str
    ts: int
    user: str
    event: str
    attempts: int = 0
    ambiguous: int = 0  # attempts with no definite answer (the unknown ones among them)
    unknown: int = 0  # attempts answered "outcome unknown"
    acked_at: float | None = None  # time.monotonic() of the 204
    attempted_at: list[float] = field(default_factory=list)  # time.monotonic() each attempt left
    ambiguous_at: list[float] = field(default_factory=list)  # ... and each ambiguous answer came
    refusals: list[str] = field(default_factory=list)
    # Acknowledged after a backup and gone with the restore from it: the
    # audit's finding, an expected loss (README, Backup and restore).
    lost_by_restore: bool = False

    @property
    def hour(self) -> int:
        return hour_of(self.ts)

    @property
    def outcome(self) -> Outcome:
        if self.acked_at is not None:
            return Outcome.ACKED
        return Outcome.UNANSWERED if self.ambiguous else Outcome.REFUSED


@dataclass(frozen=True)
class Bounds:
    """What an hour's answer may count of this record: ``low <= counted <= high`` per field."""

    low: HourCounts
    high: HourCounts

    def holds(self, counted: HourCounts) -> bool:
        return all(getattr(self.low, f) <= getattr(counted, f) <= getattr(self.high, f) for f in FIELDS)

    def exceeded_by(self, counted: HourCounts) -> bool:
        """More than was ever sent: wrong at any time (a lagging answer may only be below)."""
        return any(getattr(counted, f) > getattr(self.high, f) for f in FIELDS)


FIELDS = ("unique_users", "clicks", "impressions")


@dataclass(frozen=True)
class Restore:
    """A shard restored from a backup: events acknowledged from ``backup_at`` to ``restored_at`` may be gone."""

    shard: str
    backup_at: float  # time.monotonic() just before the backup's snapshot was taken
    restored_at: float  # time.monotonic() once the restored database serves again

    def may_have_lost(self, sent: Sent) -> bool:
        return sent.acked_at is not None and self.backup_at <= sent.acked_at <= self.restored_at


@dataclass
class HourIndex:
    """Per hour, for checking answers given while the load runs."""

    ack_times: dict[str, list[float]] = field(default_factory=lambda: {CLICK: [], IMPRESSION: []})
    user_first_ack: dict[str, float] = field(default_factory=dict)
    user_ack_times: list[float] = field(default_factory=list)  # first acks, in order
    sent: dict[str, int] = field(default_factory=lambda: {CLICK: 0, IMPRESSION: 0})
    sent_users: set[str] = field(default_factory=set)


class AuditRecord:
    """Every event one load sent, with keys ``{prefix}{n}``; all users of the record start with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events: list[Sent] = []
        self.index: dict[int, HourIndex] = {}
        # Counts per hour from before the load (other runs' data), taken by the audit.
        self.baseline: dict[int, HourCounts] = {}
        # Shards restored from a backup while the load ran (a restore drill).
        self.restores: list[Restore] = []

    @classmethod
    def merged(cls, records: Iterable[AuditRecord]) -> AuditRecord:
        """All events of several records, for auditing a whole fresh cluster at once (baseline 0, every key)."""
        merged = cls("")
        for record in records:
            merged.events.extend(record.events)
        return merged

    def new_event(self, ts: int, user: str, event: str) -> Sent:
        sent = Sent(key=f"{self.prefix}{len(self.events)}", ts=ts, user=user, event=event)
        self.events.append(sent)
        return sent

    def on_attempt(self, sent: Sent) -> None:
        """Called before each attempt is sent: it may be stored from now on."""
        sent.attempts += 1
        sent.attempted_at.append(time.monotonic())
        idx = self.index.setdefault(sent.hour, HourIndex())
        idx.sent[sent.event] += 1
        idx.sent_users.add(sent.user)

    def on_ack(self, sent: Sent) -> None:
        now = time.monotonic()
        sent.acked_at = now
        idx = self.index.setdefault(sent.hour, HourIndex())
        idx.ack_times[sent.event].append(now)
        if sent.user not in idx.user_first_ack:
            idx.user_first_ack[sent.user] = now
            idx.user_ack_times.append(now)

    # -- bounds ---------------------------------------------------------------

    def live_bounds(self, hour: int, acked_before: float) -> Bounds:
        """Bounds for an answer received now whose request left after ``acked_before`` + staleness.

        Low: what was acknowledged before ``acked_before`` (the answer may lag
        by the staleness bound). High: every attempt sent so far (each may be
        stored once).
        """
        idx = self.index.get(hour, HourIndex())
        low = HourCounts(
            bisect.bisect_right(idx.user_ack_times, acked_before),
            bisect.bisect_right(idx.ack_times[CLICK], acked_before),
            bisect.bisect_right(idx.ack_times[IMPRESSION], acked_before),
        )
        high = HourCounts(len(idx.sent_users), idx.sent[CLICK], idx.sent[IMPRESSION])
        return Bounds(self.shifted(hour, low), self.shifted(hour, high))

    def final_bounds(self, hour: int) -> Bounds:
        """Once nothing is in flight: acknowledged <= counted <= acknowledged + ambiguous attempts."""
        low = {CLICK: 0, IMPRESSION: 0}
        high = {CLICK: 0, IMPRESSION: 0}
        low_users: set[str] = set()
        high_users: set[str] = set()
        for sent in self.in_hour(hour):
            acked = sent.acked_at is not None and not sent.lost_by_restore
            low[sent.event] += acked
            high[sent.event] += acked + sent.ambiguous
            if acked:
                low_users.add(sent.user)
            if acked or sent.ambiguous:
                high_users.add(sent.user)
        return Bounds(self.shifted(hour, HourCounts(len(low_users), low[CLICK], low[IMPRESSION])),
                      self.shifted(hour, HourCounts(len(high_users), high[CLICK], high[IMPRESSION])))

    def shifted(self, hour: int, own: HourCounts) -> HourCounts:
        """Own counts plus the hour's baseline (the record's users are new in every hour)."""
        base = self.baseline.get(hour, HourCounts(0, 0, 0))
        return HourCounts(base.unique_users + own.unique_users, base.clicks + own.clicks,
                          base.impressions + own.impressions)

    # -- views ----------------------------------------------------------------

    @property
    def hours(self) -> list[int]:
        return sorted({s.hour for s in self.events if s.attempts})

    def in_hour(self, hour: int) -> Iterable[Sent]:
        return (s for s in self.events if s.hour == hour and s.attempts)

    def with_outcome(self, outcome: Outcome) -> list[Sent]:
        return [s for s in self.events if s.attempts and s.outcome is outcome]

    def ledger(self, outcome: Outcome) -> Ledger:
        """These events as the benchmark's ledger of (hour, user, event)."""
        ledger = Ledger()
        for sent in self.with_outcome(outcome):
            ledger.record(sent.ts, sent.user, sent.event)
        return ledger

    @property
    def retried_after_no_answer(self) -> int:
        """Acknowledged events that had an attempt without an answer before (may count twice across shards)."""
        return sum(1 for s in self.with_outcome(Outcome.ACKED) if s.ambiguous)
