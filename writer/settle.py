"""The settle bound on the nginx→writer path: the deadline of a write, and the clocks' skew.

nginx stamps every write it forwards with its send time (``X-Reactions-Sent:
$msec``, seconds with milliseconds). A write may commit until its deadline,
the stamp + settle − staleness − skew margin (docs/design.md, Invariants 8): past it,
the writer refuses it unsent (503, certainly not stored), and PostgreSQL
rolls back a transaction that would commit later (writer/db.py
``guard_commit``). So a request that reached the writer late (a partition
healed, TCP delivered what it had kept) is never counted.

A request without the stamp (a writer reached directly) gets the same budget
from its arrival; a stamp ahead of the writer's clock counts from the arrival
too, so a wrong clock or a forged header never extends the deadline.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# The header nginx sets on every request it forwards to a writer (nginx/reactions.conf.template).
STAMP_HEADER = "X-Reactions-Sent"
# The skew to nginx is the smallest (arrival − stamp) seen over this long: the
# transit time only adds to it, and the fastest request of a window carries
# almost none (a held or slow one would otherwise look like a skew).
SKEW_WINDOW_S = 10.0


def parse_stamp(value: str | None) -> float | None:
    """nginx's ``$msec`` (seconds since the epoch, with milliseconds) as seconds; None if absent or malformed."""
    if not value:
        return None
    try:
        stamp = float(value)
    except ValueError:
        return None
    return stamp if math.isfinite(stamp) and stamp > 0 else None


def write_deadline(stamp_s: float | None, received_s: float, budget_s: float) -> float:
    """The last moment (seconds since the epoch) a write may commit: stamp + budget.

    ``budget_s`` is settle − staleness − skew margin (writer/settings.py). The
    earlier of the stamp and the arrival counts, so that a missing, forged or
    future stamp never gives a write more time than its arrival would.
    """
    start = received_s if stamp_s is None else min(stamp_s, received_s)
    return start + budget_s


def is_late(deadline_s: float, now_s: float | None = None) -> bool:
    return (time.time() if now_s is None else now_s) > deadline_s


@dataclass
class SkewEstimate:
    """A clock's offset to a peer, kept as the smallest sample of the current and the last window.

    For nginx, a sample is arrival − stamp (the writer's clock minus nginx's,
    plus the transit time); for PostgreSQL, its clock minus the middle of the
    heartbeat's round trip (writer/health.py), signed the same way (positive:
    the writer's clock is ahead).
    """

    window_s: float = SKEW_WINDOW_S
    _current: float | None = None
    _last: float | None = None
    _window_started: float = field(default_factory=time.monotonic)

    def add(self, sample_s: float) -> bool:
        """Take a sample; whether the estimate may have changed (a new window, or a new smallest sample)."""
        now = time.monotonic()
        rolled = now - self._window_started >= self.window_s
        if rolled:
            self._last, self._current, self._window_started = self._current, None, now
        if self._current is not None and sample_s >= self._current:
            return rolled
        self._current = sample_s
        return True

    def set(self, sample_s: float) -> None:
        """A sample that is already an estimate (the heartbeat's): replaces the window."""
        self._current = self._last = sample_s
        self._window_started = time.monotonic()

    @property
    def seconds(self) -> float | None:
        """The estimate, or None before the first sample."""
        samples = [s for s in (self._current, self._last) if s is not None]
        return min(samples) if samples else None


PEERS = ("nginx", "postgres")


class Clocks:
    """This writer's skew to nginx and to its PostgreSQL, and whether either is past the margin.

    A writer whose clock is off stays ready (readiness decides routing, and
    the stamps that show the clock recovering would stop if it went unready):
    it says so in /readyz's body and in its log, once each time a skew crosses
    the margin, and in ``reactions_clock_skew_seconds``.
    """

    def __init__(self, margin_s: float) -> None:
        self.margin_s = margin_s
        self.skews = {peer: SkewEstimate() for peer in PEERS}
        self._off: set[str] = set()

    def observe(self, peer: str, sample_s: float, *, estimate: bool = False) -> None:
        skew = self.skews[peer]
        if estimate:
            skew.set(sample_s)
        elif not skew.add(sample_s):  # the common case on every POST: nothing to re-check
            return
        seconds = skew.seconds
        off = seconds is not None and abs(seconds) > self.margin_s
        if off and peer not in self._off:
            self._off.add(peer)
            log.warning("clock skew to %s is %+.3f s, beyond the %g s margin: writes may be refused as late,"
                        " or settle later than the bound; check NTP", peer, seconds, self.margin_s)
        elif not off and peer in self._off:
            self._off.discard(peer)
            log.warning("clock skew to %s is back within the %g s margin (%+.3f s)", peer, self.margin_s,
                        seconds or 0.0)

    def seconds(self, peer: str) -> float:
        """The skew to ``peer`` (NaN before the first sample), for /metrics."""
        value = self.skews[peer].seconds
        return math.nan if value is None else value

    @property
    def off(self) -> list[str]:
        return sorted(self._off)

    def report(self) -> str:
        """One line for /readyz: each skew, and whether it is past the margin."""
        parts = []
        for peer in PEERS:
            value = self.skews[peer].seconds
            parts.append(f"{peer} " + ("unknown" if value is None else f"{value:+.3f} s"))
        verdict = f"OFF by more than the {self.margin_s:g} s margin ({', '.join(self._off)})" if self._off \
            else f"within the {self.margin_s:g} s margin"
        return f"clock skew: {', '.join(parts)}: {verdict}"
