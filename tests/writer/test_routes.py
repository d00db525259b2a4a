"""The writer's dispatch of the path form: the same segments aiohttp's router would give."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_urldispatcher import UrlDispatcher

from writer.routes import path_write_segments


async def accepted(request: web.Request) -> web.Response:
    return web.Response(status=204)


# The pattern of the router this dispatch replaced (writer/routes.py before it):
# any non-empty segment.
SEGMENT_PATTERN = "[^/]+"


@pytest.mark.parametrize("path", [
    "/analytics/1764358400000/alice/click",
    "/analytics/1/a%2Fb/impression",          # an escaped slash belongs to the username
    "/analytics/1/100%25/click",              # so does an escaped percent sign
    "/analytics/1/%C3%A9l%C3%A8ve/click",     # percent-encoded UTF-8
    "/analytics/1/{brace}/click",
    "/analytics/1/a%252Fb/click",
    "/analytics//alice/click",                # an empty segment: no match
    "/analytics/1/alice/click/",              # a fourth segment: no match
    "/analytics/1/alice",
    "/analytics/",
    "/analyticsx/1/alice/click",
])
async def test_segments_are_those_of_aiohttps_router(path: str) -> None:
    router = UrlDispatcher()
    router.add_post(f"/analytics/{{ts:{SEGMENT_PATTERN}}}/{{user:{SEGMENT_PATTERN}}}/{{event:{SEGMENT_PATTERN}}}",
                    accepted)
    request = make_mocked_request("POST", path)
    match = await router.resolve(request)
    expected = None if match.http_exception is not None else (match["ts"], match["user"], match["event"])
    assert path_write_segments(request.rel_url.path_safe) == expected
