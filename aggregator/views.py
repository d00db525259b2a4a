"""HTTP handlers of the aggregator.

The live-hour path is the hot one (about 95% of reads): a dict lookup and a
pre-encoded body, no await, no allocation beyond the response itself.
"""

from __future__ import annotations

import asyncio
from email.utils import formatdate

from aiohttp import web
from multidict import CIMultiDict

from aggregator import db
from aggregator.fanout import ColdReadsBusy, IncompleteAnswer
from aggregator.keys import FANOUT, HOURS, LISTENER, METRICS, SETTINGS, SHARDS
from aggregator.series import HourRange, parse_range, render_csv
from aggregator.source import Answer, HourNotReady, oldest_stale
from aggregator.status import shard_json
from common.events import MAX_READ_TIMESTAMP_MS, MAX_TIMESTAMP_DIGITS, parse_read_hour
from common.hours import hour_of
from common.metrics import exposition

RETRY_AFTER_S = "1"
STALE = "X-Reactions-Stale"
STALE_SINCE = "X-Reactions-Stale-Since"
# Built once: the live path then only copies it into each response.
TEXT_PLAIN = CIMultiDict({"Content-Type": "text/plain; charset=utf-8"})
TEXT_CSV = "text/csv; charset=utf-8"
# The request line of nearly every read: checked on the raw path, before any URL decoding.
FAST_PREFIX = "/analytics?timestamp="


def unavailable(reason: str) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(text=reason + "\n", headers={"Retry-After": RETRY_AFTER_S})


def stale_headers(since_ms: int) -> dict[str, str]:
    """The marks of an answer that may lag: stale, and the time of the snapshot it is."""
    return {STALE: "true", STALE_SINCE: formatdate(since_ms / 1000, usegmt=True)}


def plain(body: bytes, extra: dict[str, str] | None = None) -> web.Response:
    if extra is None:
        return web.Response(body=body, headers=TEXT_PLAIN)
    return web.Response(body=body, headers={**TEXT_PLAIN, **extra})


def read_hour(request: web.Request) -> int:
    """The hour asked for; plain ``?timestamp=<digits>`` skips URL decoding and the query multidict."""
    raw = request.raw_path
    if raw.startswith(FAST_PREFIX):
        digits = raw[len(FAST_PREFIX):]
        if len(digits) <= MAX_TIMESTAMP_DIGITS and digits.isdigit() and digits.isascii():
            ts = int(digits)
            if ts <= MAX_READ_TIMESTAMP_MS:
                return hour_of(ts)
    try:
        return parse_read_hour(request.query)
    except web.HTTPBadRequest:
        request.app[METRICS].refused.labels("400").inc()
        raise


async def get_analytics(request: web.Request) -> web.Response:
    app = request.app
    hour = read_hour(request)
    body = app[HOURS].fresh(hour)
    if body is not None:  # the hot path: a live hour's complete snapshot, young enough to be fresh
        app[METRICS].live_reads.inc()
        return web.Response(body=body, headers=TEXT_PLAIN)
    return await one_hour(app, hour)


def require_shard_list(app: web.Application) -> None:
    """503 while no shard list was read yet: an empty set of shards would answer zeros as complete."""
    shards = app[SHARDS]
    if not shards.ready:
        app[METRICS].refused.labels("503").inc()
        raise unavailable(f"not ready: {shards.waiting.describe()}")


async def one_hour(app: web.Application, hour: int) -> web.Response:
    """Any other hour: a live one marked stale, a past one (cached, or read once and cached), one ahead."""
    metrics = app[METRICS]
    require_shard_list(app)
    try:
        answer = await app[HOURS].hour(app[SHARDS], hour, lambda kind: metrics.reads.labels(kind).inc())
    except HourNotReady as exc:
        metrics.refused.labels("503").inc()
        raise unavailable(f"hour {hour} is not available: no complete read of every shard yet{exc.why}") from None
    except IncompleteAnswer as exc:
        metrics.refused.labels("503").inc()
        raise unavailable(f"hour {hour} is incomplete, not answered: {exc}") from None
    except ColdReadsBusy as exc:
        metrics.refused.labels("503").inc()
        raise unavailable(f"hour {hour} is not answered now: {exc}; retry") from None
    if answer.stale_since_ms is None:
        return plain(answer.body)
    return plain(answer.body, stale_headers(answer.stale_since_ms))


def read_range(request: web.Request) -> HourRange:
    try:
        return parse_range(request.query)
    except web.HTTPBadRequest:
        request.app[METRICS].refused.labels("400").inc()
        raise


async def get_series(request: web.Request) -> web.Response:
    """Every hour of a range as CSV: a 503 if any is incomplete, marked stale if any live hour is."""
    app, span = request.app, read_range(request)
    require_shard_list(app)
    try:
        answers = await series_answers(app, span)
    except (IncompleteAnswer, ColdReadsBusy, HourNotReady) as exc:
        app[METRICS].refused.labels("503").inc()
        raise unavailable(f"series {span.first}..{span.last} is incomplete, not answered: {exc}") from None
    app[METRICS].reads.labels("series").inc()
    headers = {"Content-Type": TEXT_CSV, "Content-Location": span.canonical_path}
    stale_since = oldest_stale(answers)
    if stale_since is not None:
        headers |= stale_headers(stale_since)
    return web.Response(body=render_csv(span.hours, {hour: a.body for hour, a in answers.items()}), headers=headers)


async def series_answers(app: web.Application, span: HourRange) -> dict[int, Answer]:
    """The series' hours within the series bound; a 503 naming the bound when it runs out."""
    settings = app[SETTINGS]
    try:
        async with asyncio.timeout(settings.series_timeout_s):
            return await app[HOURS].hours(app[SHARDS], span.hours)
    except TimeoutError:
        app[METRICS].refused.labels("503").inc()
        raise unavailable(f"series {span.first}..{span.last} not read within {settings.series_timeout_s:g} s "
                          f"({len(span.hours)} hours); ask for a shorter range, or retry") from None


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready when the shard list was read and every shard (active or retired) answers, within the shard timeout."""
    shards = request.app[SHARDS]
    if not shards.ready:
        raise unavailable(f"not ready: {shards.waiting.describe()}")
    _, failures = await request.app[FANOUT].gather(shards, lambda _name, conn: db.fetch_identity(conn))
    if failures:
        raise unavailable("; ".join(f"shard {f.shard}: {f.reason}" for f in failures))
    return web.Response(text="ready\n")


async def shards(request: web.Request) -> web.Response:
    """What this aggregator reads, as JSON: each shard's state, database identity and last read (no I/O)."""
    app = request.app
    listening = app[LISTENER].listening if LISTENER in app else set()
    return web.json_response({"shards": [
        shard_json(handle.shard, app[FANOUT].status.get(handle.name), handle.name in listening)
        for handle in app[SHARDS]
    ]})


async def metrics(request: web.Request) -> web.Response:
    return exposition(request.app[METRICS].registry)
