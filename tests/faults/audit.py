"""The audit after a load: every touched hour read back, checked against the record and the shards.

Three views must agree:

1. the record (tests/faults/record.py): ``acknowledged <= counted <=
   acknowledged + ambiguous`` for clicks and impressions, and for unique users
   ``acknowledged users <= counted <= acknowledged or unanswered users``;
2. the shards' own rows, found by the events' idempotency keys: every
   acknowledged key is stored (else it is lost), no refused key is stored (an
   event every attempt of which got a plain 503 or another definite refusal:
   refused but counted), no key is stored more often than it had attempts
   without an answer (time-outs and unknown outcomes), and each row holds
   exactly what was sent;
3. the GET answers through nginx (and from each aggregator directly): once
   they converge they equal the stored rows plus the hour's baseline,
   exactly. An answer not marked stale that differs from the truth once the
   staleness bound has passed is a wrong answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import asyncpg

from common.settings import STALENESS_BOUND_S
from perf.ledger import CLICK, IMPRESSION, HourCounts
from tests.faults.load import LoadStats, WrongAnswer, get_hour
from tests.faults.record import AuditRecord, Bounds, Outcome

# How long the answers may take to converge after a load (and its faults) ended.
CONVERGE_S = 20.0
POLL_S = 0.05
# Beyond the staleness bound, before a baseline's answers count: the clocks of one machine, a poll.
BASELINE_MARGIN_S = 0.2
# GETs through nginx per hour once converged: least_conn spreads them over the aggregators.
CONFIRM_READS = 4
EVENT_NAMES = {1: "click", 2: "impression"}


@dataclass
class Stored:
    """What the shards hold of one record."""

    copies: Counter[str] = field(default_factory=Counter)  # key -> rows
    garbled: list[str] = field(default_factory=list)
    per_hour: dict[int, tuple[set[str], Counter[str]]] = field(default_factory=dict)  # users, events

    def counts(self, hour: int) -> HourCounts:
        users, events = self.per_hour.get(hour, (set(), Counter()))
        return HourCounts(len(users), events["click"], events["impression"])


@dataclass
class AuditReport:
    name: str
    acknowledged: int = 0
    unanswered: int = 0
    unknown: int = 0  # unanswered events with at least one "outcome unknown" answer
    refused: int = 0
    retried_after_no_answer: int = 0
    stored: int = 0  # rows of the record's keys in the shards
    counted: int = 0  # events of the record counted by the final GETs
    lost: list[str] = field(default_factory=list)
    # Acknowledged after a backup that a shard was then restored from: expected
    # losses of a restore, reported, not failures.
    lost_by_restore: list[str] = field(default_factory=list)
    refused_but_stored: list[str] = field(default_factory=list)
    duplicated: int = 0  # keys stored twice (a retry that another shard took)
    over_stored: list[str] = field(default_factory=list)
    garbled: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    posts: Counter[str] = field(default_factory=Counter)
    reads: Counter[str] = field(default_factory=Counter)
    hours: int = 0
    slowest_s: float = 0.0  # the longest request of the load, POST or GET
    slowest: str = ""

    def problems(self) -> list[str]:
        out = [f"lost (acknowledged, not stored): {k}" for k in self.lost[:20]]
        out += [f"refused but counted (stored although refused): {k}" for k in self.refused_but_stored[:20]]
        out += [f"stored more often than attempted: {k}" for k in self.over_stored[:20]]
        out += [f"garbled row: {g}" for g in self.garbled[:20]]
        out += [f"wrong answer: {w}" for w in self.wrong[:20]]
        return out

    def line(self) -> str:
        return (f"{self.name:<26} acknowledged={self.acknowledged:<6} unanswered={self.unanswered:<3} "
                f"unknown={self.unknown:<3} refused={self.refused:<4} retried={self.retried_after_no_answer:<3} "
                f"stored={self.stored:<6} counted={self.counted:<6} duplicated={self.duplicated:<2} "
                f"lost={len(self.lost)} lost_by_restore={len(self.lost_by_restore)} wrong={len(self.wrong)} "
                f"refused_but_counted={len(self.refused_but_stored)} "
                f"slowest={self.slowest_s:.2f}s hours={self.hours}")


async def take_baseline(base: str, record: AuditRecord, hours: Sequence[int], deadline_s: float = CONVERGE_S) -> None:
    """The hours' counts before the load: complete answers, two equal in a row (so nothing is settling).

    It first waits out the staleness bound: an unmarked answer counts every event acknowledged that
    long before it (docs/design.md, Invariants 5), so the baseline holds everything written before
    the load, including what the test just before it wrote last (two equal answers 50 ms apart can
    be one cached answer, which proves nothing about that).
    """
    await asyncio.sleep(STALENESS_BOUND_S + BASELINE_MARGIN_S)  # the contract's bound, not a guess
    async with aiohttp.ClientSession() as session:
        for hour in hours:
            deadline, previous = time.monotonic() + deadline_s, None
            while True:
                status, stale, counted = await get_hour(session, base, hour)
                if status == 200 and not stale and counted is not None and counted == previous:
                    record.baseline[hour] = counted
                    break
                previous = counted if status == 200 and not stale else None
                if time.monotonic() > deadline:
                    raise AssertionError(f"no complete answer for hour {hour} before the load (last: {status})")
                await asyncio.sleep(POLL_S)


async def read_stored(dsns: Sequence[str], record: AuditRecord) -> Stored:
    """Every row of the record's keys (and of its users without a key) on every shard."""
    sent = {s.key: s for s in record.events}
    stored = Stored()
    for dsn in dsns:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT idem_key, ts, hour, username, event FROM reactions "
                "WHERE starts_with(idem_key, $1) OR (idem_key IS NULL AND starts_with(username, $1))",
                record.prefix)
        finally:
            await conn.close()
        for row in rows:
            key, event = row["idem_key"], EVENT_NAMES.get(row["event"], "?")
            origin = sent.get(key) if key is not None else None
            if origin is None or (row["ts"], row["username"], event) != (origin.ts, origin.user, origin.event):
                stored.garbled.append(f"{dict(row)} (sent: {origin})")
                continue
            stored.copies[key] += 1
            users, events = stored.per_hour.setdefault(row["hour"], (set(), Counter()))
            users.add(row["username"])
            events[event] += 1
    return stored


def check_keys(record: AuditRecord, stored: Stored, report: AuditReport) -> None:
    for sent in record.events:
        if not sent.attempts:
            continue
        copies = stored.copies.get(sent.key, 0)
        outcome = sent.outcome
        if outcome is Outcome.ACKED and copies == 0:
            lost = f"{sent.key} {sent.user} {sent.event} ts={sent.ts}"
            sent.lost_by_restore = any(r.may_have_lost(sent) for r in record.restores)
            (report.lost_by_restore if sent.lost_by_restore else report.lost).append(lost)
        if outcome is Outcome.REFUSED and copies:
            report.refused_but_stored.append(f"{sent.key} (answers: {'; '.join(sent.refusals)})")
        if copies > (outcome is Outcome.ACKED) + sent.ambiguous:
            report.over_stored.append(f"{sent.key}: {copies} rows, {sent.ambiguous} attempts without an answer")
        report.duplicated += copies > 1
    report.garbled = stored.garbled
    report.stored = sum(stored.copies.values())


def excused_by_restore(wrong: WrongAnswer, record: AuditRecord) -> bool:
    """A live answer, sent after a backup, below its bound only by events that the restore lost.

    Those events were acknowledged and then taken back by the restore (an
    expected loss of a restore drill): an answer may count them before the
    restore and not after it.
    """
    if not any(wrong.left_at >= r.backup_at for r in record.restores):
        return False
    lost = [s for s in record.in_hour(wrong.hour) if s.lost_by_restore]
    low = wrong.bounds.low
    relaxed = HourCounts(low.unique_users - len({s.user for s in lost}),
                         low.clicks - sum(s.event == CLICK for s in lost),
                         low.impressions - sum(s.event == IMPRESSION for s in lost))
    return Bounds(relaxed, wrong.bounds.high).holds(wrong.counted)


async def converge(base: str, hour: int, expected: HourCounts, bounds: Bounds, settled_at: float,
                   wrong: list[str], deadline_s: float) -> HourCounts | None:
    """Poll the hour through nginx until it answers ``expected``; complete answers past ``settled_at`` must."""
    deadline, last = time.monotonic() + deadline_s, None
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            status, stale, counted = await get_hour(session, base, hour)
            if status == 200 and not stale and counted is not None:
                last = counted
                if counted == expected:
                    return counted
                # Until the staleness bound has passed, an answer may still lag
                # (below the final counts); it may never exceed what was sent.
                if time.monotonic() > settled_at or bounds.exceeded_by(counted):
                    wrong.append(f"hour {hour}: answered {counted}, stored {expected}, allowed {bounds.low}"
                                 f" .. {bounds.high}")
                    return counted
            await asyncio.sleep(POLL_S)
    wrong.append(f"hour {hour}: no complete answer within {deadline_s:.0f}s (last complete: {last}, "
                 f"stored {expected})")
    return last


async def confirm(sources: Sequence[str], hour: int, expected: HourCounts, settled_at: float,
                  wrong: list[str]) -> None:
    """Once converged, every aggregator (and nginx again) must answer the same, complete.

    Replicas refresh independently: until the staleness bound has passed
    (``settled_at``), one may still answer an older complete snapshot.
    """
    async with aiohttp.ClientSession() as session:
        for source in sources:
            while True:
                status, stale, counted = await get_hour(session, source, hour)
                if status == 200 and not stale and counted == expected:
                    break
                if time.monotonic() > settled_at:
                    wrong.append(f"hour {hour} via {source}: status {status}, stale={stale}, answered {counted}, "
                                 f"stored {expected}")
                    break
                await asyncio.sleep(POLL_S)


async def audit(name: str, base: str, aggregators: Sequence[str], dsns: Sequence[str], record: AuditRecord,
                stats: LoadStats, staleness_s: float, converge_s: float = CONVERGE_S) -> AuditReport:
    """The whole audit of one load; call it once nothing is in flight and the cluster has recovered."""
    report = AuditReport(name, posts=stats.posts, reads=stats.reads, hours=len(record.hours),
                         slowest_s=stats.slowest_s, slowest=stats.slowest)
    report.acknowledged = len(record.with_outcome(Outcome.ACKED))
    unanswered = record.with_outcome(Outcome.UNANSWERED)
    report.unanswered = len(unanswered)
    report.unknown = sum(1 for s in unanswered if s.unknown)
    report.refused = len(record.with_outcome(Outcome.REFUSED))
    report.retried_after_no_answer = record.retried_after_no_answer
    stored = await read_stored(dsns, record)
    check_keys(record, stored, report)
    report.wrong = [str(w) for w in stats.wrong if not excused_by_restore(w, record)]
    settled_at = max(stats.last_ack, time.monotonic() - converge_s) + staleness_s
    for hour in record.hours:
        expected = record.shifted(hour, stored.counts(hour))
        bounds = record.final_bounds(hour)
        if not bounds.holds(expected):
            report.wrong.append(f"hour {hour}: the shards hold {expected}, outside {bounds.low} .. {bounds.high}")
        counted = await converge(base, hour, expected, bounds, settled_at, report.wrong, converge_s)
        if counted is not None:
            baseline = record.baseline.get(hour, HourCounts(0, 0, 0))
            report.counted += counted.clicks + counted.impressions - baseline.clicks - baseline.impressions
        if counted == expected:
            await confirm([base] * CONFIRM_READS + list(aggregators), hour, expected, settled_at, report.wrong)
    return report


def assert_clean(report: AuditReport) -> None:
    """The audit's verdict for a test: nothing lost, nothing wrong."""
    assert not report.problems(), f"{report.line()}\n" + "\n".join(report.problems())

