"""HTTP handlers of the writer."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from common.events import BadInput, Reaction, parse_path_write, parse_query_write, require_utf8
from common.hours import now_ms
from common.metrics import exposition
from writer import db
from writer.batcher import CommitFailed, Overloaded, ShuttingDown
from writer.keys import COMMITTER, METRICS, POOL

RETRY_AFTER_S = "1"


def unavailable(reason: str) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(text=reason + "\n", headers={"Retry-After": RETRY_AFTER_S})


async def store(request: web.Request, parse: Callable[[], Reaction]) -> web.Response:
    """Validate, wait for the commit, answer 204 (or 400/503)."""
    metrics = request.app[METRICS]
    try:
        require_utf8(request.raw_path)
        reaction = parse()
    except BadInput as exc:
        metrics.rejected.labels(exc.code).inc()
        raise
    try:
        await request.app[COMMITTER].submit(reaction)
    except Overloaded:
        metrics.overloaded.inc()
        raise unavailable("writer is overloaded") from None
    except ShuttingDown:
        metrics.overloaded.inc()
        raise unavailable("writer is shutting down") from None
    except CommitFailed:
        raise unavailable("event not stored: the database did not commit it") from None
    return web.Response(status=204)


async def post_query(request: web.Request) -> web.Response:
    key = request.headers.get("Idempotency-Key")
    return await store(request, lambda: parse_query_write(request.query, key, now_ms()))


async def post_path(request: web.Request) -> web.Response:
    m, key = request.match_info, request.headers.get("Idempotency-Key")
    return await store(request, lambda: parse_path_write(m["ts"], m["user"], m["event"], request.query, key, now_ms()))


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    try:
        async with request.app[POOL].acquire(timeout=1.0) as conn:
            await db.ping(conn)
    except Exception as exc:  # any failure means not ready
        raise unavailable(f"database unreachable: {type(exc).__name__}") from None
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    return exposition(request.app[METRICS].registry)
