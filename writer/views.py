"""HTTP handlers of the writer."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web

from common.events import BadInput, Reaction, parse_path_write, parse_query_write, require_utf8
from common.hours import now_ms
from common.metrics import exposition
from writer import settle
from writer.batcher import NotStored, OutcomeUnknown, Overloaded, TooLate, late
from writer.keys import CLOCKS, COMMITTER, DISPATCHER, HEALTH, METRICS, SETTINGS, STARTING

RETRY_AFTER_S = "1"
# Marks an answer whose event may or may not be stored (docs/contract.md).
OUTCOME_HEADER = "X-Reactions-Outcome"


def unavailable(reason: str) -> web.HTTPServiceUnavailable:
    """503: certainly not stored."""
    return web.HTTPServiceUnavailable(text=reason + "\n", headers={"Retry-After": RETRY_AFTER_S})


def outcome_unknown(reason: str) -> web.HTTPGatewayTimeout:
    """504 marked unknown: the commit was sent and its answer lost; retrying with the same key is safe."""
    return web.HTTPGatewayTimeout(
        text=f"outcome unknown: {reason}; the event may be stored: retry with the same Idempotency-Key\n",
        headers={"Retry-After": RETRY_AFTER_S, OUTCOME_HEADER: "unknown"},
    )


def deadline_of(app: web.Application, request: web.BaseRequest) -> float:
    """The last moment this write may commit (writer/settle.py); nginx's stamp also measures the skew to it."""
    received = time.time()
    stamp = settle.parse_stamp(request.headers.get(settle.STAMP_HEADER))
    if stamp is not None:
        app[CLOCKS].observe("nginx", received - stamp)
    return settle.write_deadline(stamp, received, app[SETTINGS].write_budget_s)


async def store(app: web.Application, request: web.BaseRequest, parse: Callable[[], Reaction]) -> web.Response:
    """Validate, wait for the commit by the write's deadline, answer 204 (or 400/503)."""
    metrics = app[METRICS]
    deadline = deadline_of(app, request)
    try:
        require_utf8(request.raw_path)
        reaction = parse()
    except BadInput as exc:
        metrics.rejected.labels(exc.code).inc()
        raise
    try:
        if settle.is_late(deadline):
            raise late(deadline)
        await app[COMMITTER].submit(reaction, deadline)
    except TooLate as exc:
        metrics.late.labels(exc.where).inc()
        metrics.refused.inc()
        raise unavailable(f"event not stored: {exc}") from None
    except Overloaded as exc:
        metrics.overloaded.inc()
        raise unavailable(str(exc)) from None
    except NotStored as exc:
        metrics.refused.inc()
        raise unavailable(f"event not stored: {exc}") from None
    except OutcomeUnknown as exc:
        metrics.unknown.inc()
        raise outcome_unknown(str(exc)) from None
    return web.Response(status=204)


async def post_query(app: web.Application, request: web.BaseRequest) -> web.Response:
    key = request.headers.get("Idempotency-Key")
    return await store(app, request, lambda: parse_query_write(request.query, key, now_ms()))


async def post_path(app: web.Application, request: web.BaseRequest, ts: str, user: str, event: str) -> web.Response:
    key = request.headers.get("Idempotency-Key")
    return await store(app, request, lambda: parse_path_write(ts, user, event, request.query, key, now_ms()))


async def healthz(app: web.Application, request: web.BaseRequest) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(app: web.Application, request: web.BaseRequest) -> web.Response:
    """Ready while the last heartbeats committed: answered at once, from the probe's state.

    Before the probe runs, the writer is still starting: it says what it waits for.
    The second line reports the clocks' skew. A clock off by more than the
    margin leaves the writer ready (docs/design.md, Writer: clocks), and says so here.
    """
    if HEALTH not in app:
        starting = app[STARTING]
        raise unavailable(f"not ready: {'starting' if starting.done else starting.describe()}")
    clocks = app[CLOCKS].report()
    # Single POSTs need no topology: a writer still waiting for it stays ready, and says so.
    batches = app[DISPATCHER].waiting_for() if DISPATCHER in app else None
    if batches is not None:
        clocks = f"{clocks}\nbatches: {batches}"
    reason = app[HEALTH].down_reason
    if reason is not None:
        raise unavailable(f"not ready: {reason}\n{clocks}")
    return web.Response(text=f"ready\n{clocks}\n")


async def metrics(app: web.Application, request: web.BaseRequest) -> web.Response:
    return exposition(app[METRICS].registry)
