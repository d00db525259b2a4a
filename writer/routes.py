"""The writer's routes: one function dispatches on method and path.

The writer is served by aiohttp's low-level server, not an Application's
router: the router and the Application's request handling cost about 25 µs
of CPU per request on the benchmark machine (a trivial 204 behind each, 44
against 65 to 78 µs in all), a third of a no-op request, on the hottest path
Reactions has (README, Performance). The Application still owns the
writer's lifecycle (writer/main.py); requests never go through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import HttpVersion11, web

from writer import batch_views, views
from writer.part_wire import PART_PATH

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
View = Callable[[web.Application, web.BaseRequest], Awaitable[web.StreamResponse]]

WRITE_PATH = "/analytics"
WRITE_PREFIX = WRITE_PATH + "/"
BATCH_PATH = WRITE_PATH + "/batch"
# A batch (README, Batches), and the part of one that another writer sends (not routed by nginx).
BATCHES: dict[str, View] = {BATCH_PATH: batch_views.post_batch, PART_PATH: batch_views.post_part}
READS: dict[str, View] = {"/healthz": views.healthz, "/readyz": views.readyz, "/metrics": views.metrics}


def path_write_segments(path_safe: str) -> tuple[str, str, str] | None:
    """``/analytics/{ts}/{user}/{event}``: three non-empty segments, else None.

    ``path_safe`` is the decoded path with ``%2F`` and ``%25`` still escaped,
    so a segment may hold an escaped slash; each segment is then unescaped
    exactly as aiohttp's router unescapes a match, so "a/b" is a username.
    """
    if not path_safe.startswith(WRITE_PREFIX):
        return None
    segments = path_safe[len(WRITE_PREFIX):].split("/")
    if len(segments) != 3 or not all(segments):
        return None
    ts, user, event = (s.replace("%2F", "/").replace("%25", "%") if "%" in s else s for s in segments)
    return ts, user, event


async def expect(request: web.BaseRequest) -> None:
    """An ``Expect`` header, answered as aiohttp's router answers it: 100 Continue, else 417 (nothing stored)."""
    value = request.headers.get("Expect", "")
    if request.version == HttpVersion11:
        if value.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {value}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer's own size starts after it
    await request.writer.drain()


async def post_only(app: web.Application, request: web.BaseRequest, view: View) -> web.StreamResponse:
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    return await view(app, request)


def dispatcher(app: web.Application, *, writes: bool = True) -> Handler:
    """The request handler of a writer port; ``writes=False`` for the admin port (reads only)."""

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        if "Expect" in request.headers:
            await expect(request)
        path, method = request.path, request.method
        batch_view = BATCHES.get(path) if writes else None
        if batch_view is not None:
            return await post_only(app, request, batch_view)
        if writes and path.startswith(WRITE_PATH):
            if path == WRITE_PATH:
                if method == "POST":
                    return await views.post_query(app, request)
                raise web.HTTPMethodNotAllowed(method, ["POST"])
            segments = path_write_segments(request.rel_url.path_safe)
            if segments is not None:
                if method == "POST":
                    return await views.post_path(app, request, *segments)
                raise web.HTTPMethodNotAllowed(method, ["POST"])
        return await read(app, request)

    return dispatch


async def read(app: web.Application, request: web.BaseRequest) -> web.StreamResponse:
    view = READS.get(request.path)
    if view is None:
        raise web.HTTPNotFound()
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
    return await view(app, request)
