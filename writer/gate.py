"""The writer's listening socket, open only while its database commits.

nginx moves a POST to the next writer only when it could not connect: it
never resends a request that reached a writer (that could count an event
twice), and open-source nginx has no active health checks. So a writer whose
database is down closes its listener and its idle keep-alive connections;
connections busy with a request close once it is answered. nginx's refused
connect then moves the shard's users to other writers, and ``max_fails`` /
``fail_timeout`` keep it away for a while. The listener reopens when the
database commits again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

log = logging.getLogger(__name__)

# How long a request in progress may take to be answered before its connection
# is closed under it: above the writer's own answer bound.
CLOSE_TIMEOUT_S = 5.0


class ListenGate:
    """Opens and closes one TCP site of a runner to match the wanted state (reconciled in a task)."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._runner: web.BaseRunner | None = None
        self._site: web.TCPSite | None = None
        self._want_open = True
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        return self._site is not None

    async def start(self, runner: web.BaseRunner) -> None:
        """Open the listener on ``runner`` and follow ``want_open`` from now on."""
        self._runner = runner
        await self._reconcile()
        self._task = asyncio.create_task(self._follow(), name="listen-gate")

    def want_open(self, wanted: bool) -> None:
        self._want_open = wanted
        self._changed.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._reconcile()
            except OSError as exc:  # the port is taken meanwhile: try again on the next change
                log.error("cannot reopen %s:%d: %s", self._host, self._port, exc)
                await asyncio.sleep(0.5)
                self._changed.set()

    async def _reconcile(self) -> None:
        if self._runner is None:
            return
        if self._want_open and self._site is None:
            site = web.TCPSite(self._runner, self._host, self._port)
            await site.start()
            self._site = site
            log.info("listening on %s:%d", self._host, self._port)
        elif not self._want_open and self._site is not None:
            site, self._site = self._site, None
            await site.stop()
            log.warning("closed %s:%d until the database commits again", self._host, self._port)
            await self._close_connections()

    async def _close_connections(self) -> None:
        """Close every open connection: idle ones now, busy ones once their request is answered.

        ``close()`` alone ends an idle connection's request loop but leaves its
        socket open (nginx would send the next request into it and wait for
        nothing); ``shutdown()`` then closes the socket, after the request in
        progress if there is one.
        """
        server = self._runner.server if self._runner is not None else None
        handlers = server.connections if server is not None else []
        for handler in handlers:
            handler.close()
        await asyncio.gather(*(handler.shutdown(CLOSE_TIMEOUT_S) for handler in handlers))
