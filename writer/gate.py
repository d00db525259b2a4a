"""The writer's listening socket, open only while its database commits.

nginx moves a POST to the next writer only when it could not connect: it
never resends a request that reached a writer (that could count an event
twice), and open-source nginx has no active health checks. So a writer whose
database is down closes its listener and its idle keep-alive connections;
connections busy with a request close once it is answered. nginx's refused
connect then moves the shard's users to other writers, and ``max_fails`` /
``fail_timeout`` keep it away for a while. The listener reopens when the
database commits again.

A writer with a Unix socket beside its port (REACTIONS_WRITER_SOCKETS,
sharding/sockets.py) opens and closes both together; a closed socket's file
is removed too, so nginx's connect fails at once (no such file) and moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from aiohttp import web

log = logging.getLogger(__name__)

# How long a request in progress may take to be answered before its connection
# is closed under it: above the writer's own answer bound.
CLOSE_TIMEOUT_S = 5.0


# Anyone on the host may connect to the socket (nginx's workers may run as another user).
SOCKET_MODE = 0o666


class ListenGate:
    """Opens and closes a runner's TCP site (and Unix site) to match the wanted state (reconciled in a task)."""

    def __init__(self, host: str, port: int, unix_path: str | None = None) -> None:
        self._host = host
        self._port = port
        self._unix_path = unix_path
        self._runner: web.BaseRunner | None = None
        self._sites: list[web.BaseSite] = []
        self._want_open = True
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        return bool(self._sites)

    async def start(self, runner: web.BaseRunner) -> None:
        """Open the listener on ``runner`` and follow ``want_open`` from now on."""
        self._runner = runner
        await self._reconcile()
        self._task = asyncio.create_task(self._follow(), name="listen-gate")

    def want_open(self, wanted: bool) -> None:
        self._want_open = wanted
        self._changed.set()

    async def stop(self) -> None:
        """Stop following; the runner's cleanup closes the sites (the socket's file goes now: nothing new comes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._unlink()

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
        if self._want_open and not self._sites:
            self._sites = await self._open(self._runner)
            log.info("listening on %s:%d%s", self._host, self._port,
                     f" and {self._unix_path}" if self._unix_path else "")
        elif not self._want_open and self._sites:
            sites, self._sites = self._sites, []
            for site in sites:
                await site.stop()
            self._unlink()
            log.warning("closed %s:%d%s until the database commits again", self._host, self._port,
                        f" and {self._unix_path}" if self._unix_path else "")
            await self._close_connections()

    async def _open(self, runner: web.BaseRunner) -> list[web.BaseSite]:
        """Both sites or neither (OSError)."""
        sites: list[web.BaseSite] = [web.TCPSite(runner, self._host, self._port)]
        if self._unix_path is not None:
            sites.append(web.UnixSite(runner, self._unix_path))
        opened: list[web.BaseSite] = []
        try:
            for site in sites:
                await site.start()
                opened.append(site)
            if self._unix_path is not None:
                os.chmod(self._unix_path, SOCKET_MODE)
        except OSError:
            for site in opened:
                await site.stop()
            if len(opened) == len(sites) and self._unix_path is not None:
                self._unlink()  # ours: only chmod failed; never another writer's live socket
            raise
        return opened

    def _unlink(self) -> None:
        if self._unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._unix_path)

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
