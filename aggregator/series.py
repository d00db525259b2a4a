"""GET /analytics/series: a range of hours as CSV, each row exactly what the one-hour GET answers.

Parsing and rendering only, both pure. The hours come from the same source
as a one-hour GET's (aggregator/source.py). Any hour that cannot be answered
completely makes the whole series a 503: a row is never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiMapping

from common.events import MAX_READ_TIMESTAMP_MS, MAX_TIMESTAMP_DIGITS
from common.hours import hour_of, hour_start_ms

# 31 days of hours: a month at a glance. Longer ranges are another question
# (a daily roll-up), and their cold reads could not fit the 3 s answer bound.
MAX_SERIES_HOURS = 744
SERIES_PARAMS = ("from", "to")
CSV_HEADER = b"hour_start_ms,unique_users,clicks,impressions\n"
# The columns of a row, in the order of the one-hour body's lines (aggregator/merge.py).
COUNT_NAMES = (b"unique_users", b"clicks", b"impressions")


def bad_range(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=reason + "\n")


@dataclass(frozen=True, slots=True)
class HourRange:
    """The hours of a series, first to last inclusive."""

    first: int
    last: int

    @property
    def hours(self) -> range:
        return range(self.first, self.last + 1)

    @property
    def canonical_path(self) -> str:
        """One URL per range (both ends at their hour's start), so that an HTTP cache can key on it."""
        return f"/analytics/series?from={hour_start_ms(self.first)}&to={hour_start_ms(self.last)}"


def parse_bound(query: MultiMapping[str], name: str) -> int:
    """The hour of one end of the range: milliseconds since the epoch, given once."""
    values = query.getall(name, ())
    if not values:
        raise bad_range(f"{name} is required: milliseconds since the epoch")
    if len(values) > 1:
        raise bad_range(f"{name} must be given once")
    raw = values[0]
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_TIMESTAMP_DIGITS or int(raw) > MAX_READ_TIMESTAMP_MS:
        raise bad_range(f"{name} must be an integer number of milliseconds since the epoch, before year 10000")
    return hour_of(int(raw))


def parse_range(query: MultiMapping[str]) -> HourRange:
    """``from`` and ``to`` (their hours, inclusive); 400 with a one-line reason otherwise."""
    unknown = sorted(set(query) - set(SERIES_PARAMS))
    if unknown:
        raise bad_range(f"unknown parameter: {unknown[0]} (a series takes from and to)")
    first, last = parse_bound(query, "from"), parse_bound(query, "to")
    if last < first:
        raise bad_range("to is before from: the range is reversed")
    if last - first + 1 > MAX_SERIES_HOURS:
        raise bad_range(f"the range spans {last - first + 1} hours; a series has at most {MAX_SERIES_HOURS} (31 days)")
    return HourRange(first, last)


def csv_row(hour: int, body: bytes) -> bytes:
    """A row made from the one-hour GET's own body, so that the two can never disagree."""
    counts = dict(line.split(b",", 1) for line in body.splitlines())
    return b",".join([str(hour_start_ms(hour)).encode(), *(counts[name] for name in COUNT_NAMES)]) + b"\n"


def render_csv(hours: range, bodies: Mapping[int, bytes]) -> bytes:
    return CSV_HEADER + b"".join(csv_row(hour, bodies[hour]) for hour in hours)
