"""What a load generator was acknowledged, per hour, and the audit against the GETs.

Every ``204`` a client got is one committed event (docs/design.md, Invariants 2).
The load generator records each one here; after the run the bench reads the
hours back through nginx and checks that every acknowledged event is counted.
Usernames of a run carry a prefix of their own, so the run's users are new in
every hour and the change of ``unique_users`` must equal the run's user set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from common.hours import hour_of
from perf.results import AuditRow

CLICK = "click"
IMPRESSION = "impression"


@dataclass
class HourTally:
    """The acknowledged events of one hour."""

    clicks: int = 0
    impressions: int = 0
    users: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class HourCounts:
    """One GET answer: ``unique_users,N\\nclicks,N\\nimpressions,N\\n``."""

    unique_users: int
    clicks: int
    impressions: int

    @classmethod
    def parse(cls, body: str) -> HourCounts:
        fields = dict(line.split(",", 1) for line in body.strip().splitlines())
        return cls(int(fields["unique_users"]), int(fields["clicks"]), int(fields["impressions"]))

    def __sub__(self, other: HourCounts) -> HourCounts:
        return HourCounts(self.unique_users - other.unique_users, self.clicks - other.clicks,
                          self.impressions - other.impressions)


class Ledger:
    """Acknowledged events by hour (gevent-safe: locust's users never preempt each other mid-call)."""

    def __init__(self) -> None:
        self.hours: dict[int, HourTally] = {}

    def record(self, ts_ms: int, user: str, event: str) -> None:
        tally = self.hours.setdefault(hour_of(ts_ms), HourTally())
        if event == CLICK:
            tally.clicks += 1
        elif event == IMPRESSION:
            tally.impressions += 1
        else:
            raise ValueError(f"unknown event {event!r}")
        tally.users.add(user)

    @property
    def events(self) -> int:
        return sum(t.clicks + t.impressions for t in self.hours.values())

    def expected(self, hour: int) -> HourCounts:
        tally = self.hours.get(hour, HourTally())
        return HourCounts(len(tally.users), tally.clicks, tally.impressions)

    def save(self, path: Path) -> None:
        raw = {str(h): {"clicks": t.clicks, "impressions": t.impressions, "users": sorted(t.users)}
               for h, t in self.hours.items()}
        path.write_text(json.dumps(raw))

    @classmethod
    def load(cls, path: Path) -> Ledger:
        ledger = cls()
        for hour, t in json.loads(path.read_text()).items():
            ledger.hours[int(hour)] = HourTally(t["clicks"], t["impressions"], set(t["users"]))
        return ledger


def audit(ledger: Ledger, before: dict[int, HourCounts], after: dict[int, HourCounts]) -> list[AuditRow]:
    """Compare each hour the run touched with the change its GETs show."""
    rows = []
    for hour in sorted(ledger.hours):
        counted = after[hour] - before.get(hour, HourCounts(0, 0, 0))
        expected = ledger.expected(hour)
        rows.append(AuditRow(hour, (expected.unique_users, expected.clicks, expected.impressions),
                             (counted.unique_users, counted.clicks, counted.impressions)))
    return rows
