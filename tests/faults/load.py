"""The audit load: bounded POSTs and GETs through nginx, every answer recorded and checked.

Writers post events for a population of users, mostly for the current hour
and some for past hours, in all three URL forms, each with its own
idempotency key (a header or ``id=``), retrying with the same key after a
503, an unknown outcome or no answer. A write attempt ends in one of:

- ``204``: acknowledged;
- any status with ``X-Reactions-Outcome: unknown`` (a 504, say): the request
  reached a writer and may be stored; counted as unanswered (ambiguous);
- a plain ``503``, the writer's own or nginx's own "no server answered"
  (nginx marks a request that reached a writer as unknown): refused, NOT stored;
- a time-out or a broken connection: unanswered, may be stored.

Readers GET the touched hours meanwhile and check every answer against the record:

- ``200`` without ``X-Reactions-Stale`` must be complete: at least what was
  acknowledged ``staleness_s`` before the request left, at most what had been
  sent when it came back;
- ``200`` stale-marked may lag but must not count more than was sent;
- ``503`` is allowed (a shard did not answer); anything else is an error.

The load stops by itself after ``max_events`` or ``max_seconds``, or when
``stop`` is set. Only 127.0.0.1 (or a test host of tests/support/netns.py).
The stats keep the slowest answer of any request, POST or GET: a gray
failure must not make Reactions hang.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from common.hours import MS_PER_HOUR, hour_of, hour_start_ms, now_ms
from perf.ledger import CLICK, IMPRESSION, HourCounts
from tests.faults.record import AuditRecord, Bounds, Sent

STALE_HEADER = "X-Reactions-Stale"
# A write whose outcome Reactions does not know (it reached a writer that did
# not answer in time): it may be stored; the client retries with the same key.
OUTCOME_HEADER = "X-Reactions-Outcome"
UNKNOWN_OUTCOME = "unknown"
# nginx's own 503 (nginx/reactions.conf.template, @unavailable): no writer got
# the request (one that did is marked unknown), so nothing was stored.
NGINX_UNAVAILABLE = "no server answered"
# Backoff between retries of one event: short, since faults here last seconds.
RETRY_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0)


@dataclass(frozen=True)
class LoadPlan:
    base_url: str  # nginx, http://127.0.0.1:PORT
    prefix: str  # every username and key of the run starts with it
    users: int = 200
    past_hours: tuple[int, ...] = ()  # hours that late writes go to
    past_share: float = 0.1
    writers: int = 12  # concurrent POST loops
    readers: int = 2  # concurrent GET loops
    rate: float = 400.0  # events per second, all writers together
    max_events: int = 20_000
    max_seconds: float = 60.0
    request_timeout_s: float = 5.0
    max_attempts: int = 8
    # An answer not marked stale may lag commits by at most this (README,
    # Invariants 5: twice the refresh interval at the entry point).
    staleness_s: float = 2.0
    read_pause_s: float = 0.02


@dataclass(frozen=True)
class WrongAnswer:
    hour: int
    counted: HourCounts
    bounds: Bounds
    stale: bool
    source: str
    left_at: float = 0.0  # time.monotonic() when the request was sent

    def __str__(self) -> str:
        return (f"hour {self.hour} via {self.source}{' (stale-marked)' if self.stale else ''}: counted {self.counted}, "
                f"allowed {self.bounds.low} .. {self.bounds.high}")


@dataclass
class LoadStats:
    posts: Counter[str] = field(default_factory=Counter)  # per attempt: "204", "503 writer", "unknown 504", ...
    reads: Counter[str] = field(default_factory=Counter)  # "complete", "stale", "503", ...
    wrong: list[WrongAnswer] = field(default_factory=list)
    last_ack: float = 0.0
    unknown: int = 0  # attempts answered with an unknown outcome
    slowest_s: float = 0.0  # the longest any request took, answered or not
    slowest: str = ""  # what that request was and got

    def timed(self, what: str, seconds: float) -> None:
        """Note one request's duration (from sending to its answer, error or time-out)."""
        if seconds > self.slowest_s:
            self.slowest_s, self.slowest = seconds, what


def write_url(base: str, sent: Sent, form: int, key_in_query: bool) -> str:
    """Form 0: the path form; 1: ``event=``; 2: the bare flag. The key as ``id=`` or not at all."""
    key = f"id={sent.key}" if key_in_query else ""
    if form == 0:
        return f"{base}/analytics/{sent.ts}/{sent.user}/{sent.event}" + (f"?{key}" if key else "")
    flag = f"event={sent.event}" if form == 1 else sent.event
    return f"{base}/analytics?timestamp={sent.ts}&user={sent.user}&{flag}" + (f"&{key}" if key else "")


class Load:
    """One run of the audit load against a cluster's nginx."""

    def __init__(self, plan: LoadPlan, record: AuditRecord | None = None) -> None:
        self.plan = plan
        self.record = record or AuditRecord(plan.prefix)
        self.stats = LoadStats()
        self.stop = asyncio.Event()
        self._deadline = 0.0
        self._next_slot = 0.0

    @property
    def acked(self) -> int:
        return sum(1 for s in self.record.events if s.acked_at is not None)

    async def run(self) -> None:
        """Run until a bound is reached or ``stop`` is set; return once nothing is in flight."""
        self._deadline = time.monotonic() + self.plan.max_seconds
        self._next_slot = time.monotonic()
        limit = self.plan.writers + self.plan.readers + 4
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as session:
            loops = [self._write_loop(session, i) for i in range(self.plan.writers)]
            loops += [self._read_loop(session) for _ in range(self.plan.readers)]
            await asyncio.gather(*loops)

    def _running(self) -> bool:
        return (not self.stop.is_set() and time.monotonic() < self._deadline
                and len(self.record.events) < self.plan.max_events)

    async def _pace(self) -> None:
        """Spread events evenly at ``rate`` per second across all writers."""
        now = time.monotonic()
        self._next_slot = max(self._next_slot + 1.0 / self.plan.rate, now - 1.0)
        if self._next_slot > now:
            await asyncio.sleep(self._next_slot - now)

    def _next_event(self, rng: random.Random) -> Sent:
        user = f"{self.plan.prefix}u{rng.randrange(self.plan.users)}"
        event = CLICK if rng.random() < 0.3 else IMPRESSION
        if self.plan.past_hours and rng.random() < self.plan.past_share:
            ts = hour_start_ms(rng.choice(self.plan.past_hours)) + rng.randrange(MS_PER_HOUR)
        else:
            ts = now_ms()
        return self.record.new_event(ts, user, event)

    async def _write_loop(self, session: aiohttp.ClientSession, n: int) -> None:
        rng = random.Random(f"{self.plan.prefix}{n}")
        while self._running():
            await self._pace()
            if not self._running():
                return
            await self._deliver(session, self._next_event(rng), rng)

    async def _deliver(self, session: aiohttp.ClientSession, sent: Sent, rng: random.Random) -> None:
        """Attempts with the same key until a 204, a 4xx, or the attempts run out."""
        for attempt in range(self.plan.max_attempts):
            if attempt:
                await asyncio.sleep(RETRY_BACKOFF_S[min(attempt - 1, len(RETRY_BACKOFF_S) - 1)])
            kind = await self._attempt(session, sent, rng.randrange(3), rng.random() < 0.5)
            self.stats.posts[kind] += 1
            if kind == "204":
                self.record.on_ack(sent)
                self.stats.last_ack = time.monotonic()
                return
            if kind.startswith("4"):
                sent.refusals.append(kind)
                return

    async def post_direct(self, base_url: str) -> str:
        """One attempt of a new event straight to ``base_url`` (a writer), recorded like the others."""
        sent = self._next_event(random.Random())
        async with aiohttp.ClientSession() as session:
            kind = await self._attempt(session, sent, 0, False, base_url)
        if kind == "204":
            self.record.on_ack(sent)
        return kind

    async def _attempt(self, session: aiohttp.ClientSession, sent: Sent, form: int, key_in_query: bool,
                       base_url: str | None = None) -> str:
        """One POST, timed; returns what it got. Definite refusals are noted on ``sent``, the rest as ambiguous."""
        started = time.monotonic()
        kind = await self._post(session, sent, form, key_in_query, base_url)
        self.stats.timed(f"POST {sent.key}: {kind}", time.monotonic() - started)
        return kind

    async def _post(self, session: aiohttp.ClientSession, sent: Sent, form: int, key_in_query: bool,
                    base_url: str | None) -> str:
        url = URL(write_url(base_url or self.plan.base_url, sent, form, key_in_query), encoded=True)
        headers = {} if key_in_query else {"Idempotency-Key": sent.key}
        self.record.on_attempt(sent)
        try:
            async with session.post(url, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=self.plan.request_timeout_s)) as resp:
                body = await resp.text()
                status = resp.status
                unknown = resp.headers.get(OUTCOME_HEADER, "").strip().lower() == UNKNOWN_OUTCOME
        except aiohttp.ClientConnectorError:
            sent.refusals.append("not connected")  # the request never left: nothing can be stored
            return "not connected"
        except (TimeoutError, aiohttp.ClientError):
            sent.ambiguous += 1
            sent.ambiguous_at.append(time.monotonic())
            return "no answer"
        if unknown:
            sent.ambiguous += 1
            sent.ambiguous_at.append(time.monotonic())
            sent.unknown += 1
            self.stats.unknown += 1
            return f"unknown {status}"
        if status != 204:
            sent.refusals.append(f"{status} {body.strip()}")
        if status == 503:
            return "503 nginx" if NGINX_UNAVAILABLE in body else "503 writer"
        return str(status)

    # -- reads ----------------------------------------------------------------

    def _read_hour(self, rng: random.Random) -> int:
        hours = self.record.hours
        if not hours or rng.random() < 0.7:
            return hour_of(now_ms())
        return rng.choice(hours)

    async def _read_loop(self, session: aiohttp.ClientSession) -> None:
        rng = random.Random()
        while self._running():
            await asyncio.sleep(self.plan.read_pause_s)
            hour = self._read_hour(rng)
            started = time.monotonic()
            kind = await check_read(session, self.plan.base_url, hour, self.record, self.plan.staleness_s,
                                    self.stats.wrong, timeout_s=self.plan.request_timeout_s)
            self.stats.timed(f"GET hour {hour}: {kind}", time.monotonic() - started)
            self.stats.reads[kind] += 1


async def get_hour(session: aiohttp.ClientSession, base: str, hour: int,
                   timeout_s: float = 5.0) -> tuple[int, bool, HourCounts | None]:
    """(status, stale-marked, counts) of one GET; status 0 when nothing answered."""
    ts = hour_start_ms(hour) + random.randrange(MS_PER_HOUR)
    try:
        async with session.get(f"{base}/analytics?timestamp={ts}",
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            body = await resp.text()
            stale = resp.headers.get(STALE_HEADER) is not None
            return resp.status, stale, HourCounts.parse(body) if resp.status == 200 else None
    except (TimeoutError, aiohttp.ClientError):
        return 0, False, None


async def check_read(session: aiohttp.ClientSession, base: str, hour: int, record: AuditRecord,
                     staleness_s: float, wrong: list[WrongAnswer], timeout_s: float = 5.0) -> str:
    """GET one hour and check the answer against the record; wrong answers are appended to ``wrong``."""
    left = time.monotonic()
    status, stale, counted = await get_hour(session, base, hour, timeout_s)
    if counted is None:
        return {0: "no answer", 503: "503"}.get(status, f"bad status {status}")
    bounds = record.live_bounds(hour, left - staleness_s)
    if stale:
        bounds = Bounds(HourCounts(0, 0, 0), bounds.high)
    if not bounds.holds(counted):
        wrong.append(WrongAnswer(hour, counted, bounds, stale, base, left))
        return "wrong"
    return "stale" if stale else "complete"
