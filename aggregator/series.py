"""GET /analytics/series: a range of hours as CSV, each row exactly what the one-hour GET answers.

Parsing and rendering are pure. ``read_series`` takes each hour from where a
one-hour GET would: a live hour from memory (stale-marked the same way), a
past hour from the cache, the uncached past hours read together (one
statement per shard, each hour then cached by the usual rules), and an hour
further ahead by fan-out, never cached. Any hour that cannot be answered
completely makes the whole series a 503: a row is never a guess.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from multidict import MultiMapping

from aggregator.fanout import FanOut
from aggregator.live import LiveHour
from aggregator.past import PastHours
from aggregator.shards import ShardSet
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


class HourNotReady(Exception):
    """A live hour that has had no complete read of every shard yet: no answer to give."""


@dataclass
class SeriesBodies:
    """The one-hour body of every hour of a series, and since when its oldest stale live hour is stale."""

    bodies: dict[int, bytes] = field(default_factory=dict)
    stale_since_ms: int | None = None


def live_bodies(hours: range, live: Mapping[int, LiveHour], now_ms: int, stale_after_ms: float) -> SeriesBodies:
    """The live hours of the range, from memory, as the one-hour GET serves them."""
    found = SeriesBodies()
    for hour in hours:
        entry = live.get(hour)
        if entry is None:
            continue
        if entry.body is None:
            raise HourNotReady(f"hour {hour} has no complete read of every shard yet{entry.why_incomplete}")
        found.bodies[hour] = entry.body
        since = entry.stale_since(now_ms, stale_after_ms)
        if since is not None:
            found.stale_since_ms = since if found.stale_since_ms is None else min(found.stale_since_ms, since)
    return found


async def read_series(hours: range, live: Mapping[int, LiveHour], past: PastHours, fanout: FanOut,
                      shards: ShardSet, now_ms: int, stale_after_ms: float) -> SeriesBodies:
    """Every hour of ``hours``, or the first reason one of them cannot be answered completely."""
    found = live_bodies(hours, live, now_ms, stale_after_ms)
    current = hour_of(now_ms)
    cold = [hour for hour in hours if hour not in found.bodies]
    cached = await past.cached_many(shards, [hour for hour in cold if hour < current])
    found.bodies.update(cached)
    uncached = [hour for hour in cold if hour < current and hour not in cached]
    reads: list[Awaitable[dict[int, bytes]]] = []
    if uncached:
        reads.append(past.compute_many(shards, uncached))
    ahead = [hour for hour in cold if hour >= current]
    if ahead:  # further ahead than the live hours: computed, never cached (as the one-hour GET)
        reads.append(read_ahead(fanout, shards, ahead))
    for bodies in await all_or_first_failure(reads):
        found.bodies.update(bodies)
    return found


async def read_ahead(fanout: FanOut, shards: ShardSet, hours: Sequence[int]) -> dict[int, bytes]:
    return {hour: answer.body for hour, answer in (await fanout.read_hours(shards, hours)).items()}


async def all_or_first_failure(reads: Sequence[Awaitable[dict[int, bytes]]]) -> list[dict[int, bytes]]:
    """Every result, or the first failure once all have ended (none is left running unwatched)."""
    results = await asyncio.gather(*reads, return_exceptions=True)
    done: list[dict[int, bytes]] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        done.append(result)
    return done
