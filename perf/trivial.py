"""The baseline backend: aiohttp answering Reactions' routes without doing anything.

GET /analytics answers the same 3-line body as an aggregator; a POST in any
write form answers 204 without storing. Behind the same nginx, it measures
the ceiling of the HTTP path (nginx + one aiohttp process per upstream
server) on this machine::

    REACTIONS_PORT=8301 python -m perf.trivial

With ``REACTIONS_WRITER_SOCKETS=DIR`` it also listens on the Unix socket a
writer would have there (sharding/sockets.py): the ceiling over sockets.
"""

from __future__ import annotations

import os

import uvloop
from aiohttp import web

from sharding.sockets import socket_path

BODY = b"unique_users,0\nclicks,0\nimpressions,0\n"
CONTENT_TYPE = "text/plain; charset=utf-8"


async def counts(_: web.Request) -> web.Response:
    return web.Response(body=BODY, headers={"Content-Type": CONTENT_TYPE})


async def accepted(_: web.Request) -> web.Response:
    return web.Response(status=204)


async def ok(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/analytics", counts)
    app.router.add_post("/analytics", accepted)
    app.router.add_post("/analytics/{ts}/{user}/{event}", accepted)
    app.router.add_get("/healthz", ok)
    app.router.add_get("/readyz", ok)
    return app


def main() -> None:
    # Served exactly as the services are: uvloop, no access log, the port from the environment.
    port = int(os.environ.get("REACTIONS_PORT", "8301"))
    sockets = os.environ.get("REACTIONS_WRITER_SOCKETS")
    if sockets:
        os.umask(0o111)  # its socket is 0666 like a writer's (writer/gate.py); it makes no other file
    web.run_app(create_app(), host="127.0.0.1", port=port, access_log=None, print=None,
                path=socket_path(sockets, f"127.0.0.1:{port}") if sockets else None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
