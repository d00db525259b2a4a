"""The one place where a timestamp becomes an hour bucket."""

from __future__ import annotations

import time

MS_PER_HOUR = 3_600_000


def hour_of(ts_ms: int) -> int:
    """The UTC hour bucket of a millisecond timestamp: floor(ms / 3,600,000).

    Hours are plain integers (hours since the Unix epoch), so there is no
    time zone, string format or DST to get wrong.
    """
    return ts_ms // MS_PER_HOUR


def hour_start_ms(hour: int) -> int:
    """The first millisecond of an hour bucket."""
    return hour * MS_PER_HOUR


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch (UTC)."""
    return time.time_ns() // 1_000_000


def current_hour() -> int:
    return hour_of(now_ms())
