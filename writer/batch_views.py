"""HTTP handlers of batches: ``POST /analytics/batch`` and the internal part a writer sends another.

Answers (docs/contract.md, Batches): 200 ``events,N\\nstored,N\\nalready_present,N\\n``
once every part is committed; 400 for a bad batch (nothing stored); 413 past
the limits; 422 for a key reused with another body; a plain 503 when no part
stored anything and none is in doubt; else 504 marked
``X-Reactions-Outcome: unknown``, whose body says which parts are in doubt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time

from aiohttp import web

from common.batches import TooManyEvents, parse_batch
from common.events import BAD_IDEMPOTENCY_KEY, UNKNOWN_PARAMETER, BadInput, bad_request, parse_idempotency_key
from common.hours import current_hour, now_ms
from writer import batch_db, settle
from writer.batch_db import Part, PartCommitted
from writer.batcher import NotStored, OutcomeUnknown, TooLate, late
from writer.batches import Outcome, PartResult, Request
from writer.db import CannotWrite
from writer.keys import BATCH_POOL, DISPATCHER, HEALTH, METRICS, SETTINGS
from writer.part_wire import DIGEST_HEADER, decode_part
from writer.views import OUTCOME_HEADER, RETRY_AFTER_S, deadline_of, unavailable

PLACEMENT_HEADER = "X-Reactions-Placement"
# What a forwarded part adds to each event's bytes: its record number (at most 5 digits) and a comma.
PART_OVERHEAD_PER_EVENT = 6


def too_large(reason: str) -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(max_size=0, actual_size=0, text=reason + "\n")


async def read_body(app: web.Application, request: web.BaseRequest, part: bool = False) -> bytes:
    """The whole body, within the byte limit (413) and the body timeout (408).

    A part another writer forwards may be longer than the batch it came from
    (writer/part_wire.py adds each event's record number): its limit allows
    for that, so that a batch within the limits never fails on its way.
    """
    settings = app[SETTINGS]
    limit = settings.batch_post_max_bytes
    if part:
        limit += PART_OVERHEAD_PER_EVENT * settings.batch_post_max_events
    if request.content_length is not None and request.content_length > limit:
        raise too_large(f"a batch is at most {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(settings.batch_body_timeout_s):
            async for chunk in request.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > limit:
                    raise too_large(f"a batch is at most {limit} bytes")
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the body did not arrive in time\n") from None
    return bytes(body)


def batch_request(app: web.Application, request: web.BaseRequest) -> Request:
    """The key (required), the placement asked for and the CSV type, else 400 / 415; the write's deadline."""
    key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
    if key is None:
        raise bad_request(BAD_IDEMPOTENCY_KEY, "a batch needs an Idempotency-Key header")
    placement = request.headers.get(PLACEMENT_HEADER)
    if placement not in (None, "strict"):
        raise bad_request(UNKNOWN_PARAMETER, f"{PLACEMENT_HEADER} must be strict, or absent")
    if request.content_type != "text/csv" or request.charset not in (None, "utf-8", "UTF-8"):
        raise web.HTTPUnsupportedMediaType(text="a batch is text/csv (UTF-8)\n")
    return Request(key=key, digest=b"", strict=placement == "strict",
                   sent_stamp=request.headers.get(settle.STAMP_HEADER), deadline=math.inf)


async def post_batch(app: web.Application, request: web.BaseRequest) -> web.Response:
    metrics = app[METRICS]
    try:
        req = batch_request(app, request)
        body = await read_body(app, request)
        batch = parse_batch(body, now_ms(), app[SETTINGS].batch_post_max_events)
    except BadInput as exc:
        metrics.rejected.labels(exc.code).inc()
        raise
    except TooManyEvents as exc:
        raise too_large(str(exc)) from None
    # The deadline counts from nginx's stamp, or else from when the whole body was there: a direct
    # client's slow upload is not time the commit could land late in.
    req = dataclasses.replace(req, digest=batch.digest, started=time.monotonic(), deadline=deadline_of(app, request))
    results = await app[DISPATCHER].commit(req, batch)
    return answer(len(batch), results)


def answer(events: int, results: list[PartResult]) -> web.Response:
    committed = [r.committed for r in results if r.committed is not None]
    stored = sum(c.stored for c in committed)
    if len(committed) == len(results):
        present = sum(c.already_present for c in committed)
        return web.Response(text=f"events,{events}\nstored,{stored}\nalready_present,{present}\n",
                            content_type="text/csv")
    report = "".join(f"- {describe(r)}\n" for r in results)
    if any(r.outcome is Outcome.KEY_REUSED for r in results):
        raise web.HTTPUnprocessableEntity(text="the Idempotency-Key was used for another batch; parts:\n" + report)
    if stored == 0 and not any(r.outcome is Outcome.UNKNOWN for r in results):
        raise web.HTTPServiceUnavailable(text="batch not stored: retry with the same Idempotency-Key\n" + report,
                                         headers={"Retry-After": RETRY_AFTER_S})
    raise web.HTTPGatewayTimeout(
        text="outcome unknown: some parts of the batch may be stored, others not: "
             "retry with the same Idempotency-Key\n" + report,
        headers={"Retry-After": RETRY_AFTER_S, OUTCOME_HEADER: "unknown"})


def describe(result: PartResult) -> str:
    where = f"part of {result.events} events on {'this writer' if not result.where else result.where}"
    if result.committed is not None:
        return f"{where}: committed ({result.committed.stored} stored, " \
               f"{result.committed.already_present} already present)"
    return f"{where}: {result.outcome.value} ({result.reason})"


async def post_part(app: web.Application, request: web.BaseRequest) -> web.Response:
    """A part another writer placed on this shard: committed here, or refused as a single POST would be."""
    key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
    try:
        digest = bytes.fromhex(request.headers.get(DIGEST_HEADER, ""))
    except ValueError:
        digest = b""
    if key is None or len(digest) != 32:
        raise bad_request(BAD_IDEMPOTENCY_KEY, "a batch part needs its key and its batch's digest")
    part = decode_part(await read_body(app, request, part=True), now_ms())
    # The batch's deadline: from nginx's stamp, which the first writer passed on (or this part's arrival).
    stamp = request.headers.get(settle.STAMP_HEADER)
    deadline = settle.write_deadline(settle.parse_stamp(stamp), time.time(), app[SETTINGS].write_budget_s)
    req = Request(key, digest, strict=True, sent_stamp=stamp, deadline=deadline)
    try:
        committed = await commit_here(app, req, part)
    except batch_db.KeyReused as exc:
        raise web.HTTPUnprocessableEntity(text=f"{exc}\n") from None
    except NotStored as exc:
        raise unavailable(f"part not stored: {exc}") from None
    except OutcomeUnknown as exc:
        raise web.HTTPGatewayTimeout(text=f"outcome unknown: {exc}\n",
                                     headers={"Retry-After": RETRY_AFTER_S, OUTCOME_HEADER: "unknown"}) from None
    return web.Response(text=f"stored,{committed.stored}\nalready_present,{committed.already_present}\n",
                        content_type="text/csv")


async def commit_here(app: web.Application, request: Request, part: Part) -> PartCommitted:
    """Commit a part on this writer's shard, under the writer's health rules (as its single POSTs)."""
    health, settings, metrics = app[HEALTH], app[SETTINGS], app[METRICS]
    if not health.up:
        raise NotStored(f"the shard's database is unavailable ({health.down_reason}); retry")
    try:
        if settle.is_late(request.deadline):
            raise late(request.deadline)
        committed = await batch_db.commit_part(app[BATCH_POOL], settings.bounds, request.key, request.digest, part,
                                               current_hour(), request.deadline)
    except TooLate as exc:
        metrics.late.labels(exc.where).inc(len(part))
        metrics.refused.inc(len(part))
        metrics.part_events.labels("not_stored").inc(len(part))
        raise
    except OutcomeUnknown as exc:
        health.commit_outcome_unknown(str(exc))
        metrics.part_events.labels("unknown").inc(len(part))
        raise
    except CannotWrite as exc:
        health.cannot_write(str(exc))
        metrics.part_events.labels("not_stored").inc(len(part))
        raise
    except NotStored:
        metrics.part_events.labels("not_stored").inc(len(part))
        raise
    metrics.part_events.labels("stored").inc(committed.stored)
    metrics.part_events.labels("already_present").inc(committed.already_present)
    return committed
