"""Where a service reads the shard file: a path it polls, or a URL it fetches.

Aggregators (aggregator/shards.py) and writers (writer/topology.py) follow the
topology the same way, through this one class:

- ``REACTIONS_SHARDS_FILE``: the file is polled (its mtime, inode and size)
  on every check and re-read when it changed, or on request (SIGHUP);
- ``REACTIONS_SHARDS_URL``: for a service on another host than the entry
  host, fetched from the entry host's nginx (its internal topology port) on
  every check with ``If-None-Match``, so that an unchanged file costs a 304.

A bad file or an unreachable URL keeps the last good topology (logged); only
the first read fails loudly, after retrying the URL for a while (start order
is not guaranteed).
"""

from __future__ import annotations

import asyncio
import logging
import os

import aiohttp

from sharding.config import ConfigError, Topology, load, parse

log = logging.getLogger(__name__)

FileStamp = tuple[int, int, int]
# The shard file's URL may not answer yet when a service starts: this many
# attempts, this far apart, then fail loudly.
URL_ATTEMPTS = 30
URL_RETRY_DELAY_S = 1.0


class TopologyUnavailable(ConfigError):
    """The shard file's URL did not answer, or answered something else than a shard file."""


class TopologySource:
    """The shard file at ``path`` or ``url`` (exactly one of them); each fetch bounded by ``timeout_s``."""

    def __init__(self, path: str | None, url: str | None, timeout_s: float) -> None:
        if (path is None) == (url is None):
            raise ValueError("a topology source is a file or a URL")
        self._path = path
        self._url = url
        self._timeout_s = timeout_s
        self._etag: str | None = None
        self._stamp: FileStamp | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reload_requested = False

    def request_reload(self) -> None:
        """Re-read the file at the next check, changed or not (SIGHUP)."""
        self._reload_requested = True

    async def open(self, attempts: int = URL_ATTEMPTS) -> Topology:
        """The first read: a bad file fails at once, a URL is tried ``attempts`` times (ConfigError after)."""
        if self._path is not None:
            return self._read()
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        self._etag = None  # a first read wants the file, never a 304
        for attempt in range(1, attempts + 1):
            try:
                topology = await self._fetch()
                assert topology is not None  # no ETag: never a 304
                return topology
            except ConfigError as exc:
                if attempt == attempts:
                    raise
                log.warning("%s; retry %d/%d", exc, attempt, URL_ATTEMPTS)
                await asyncio.sleep(URL_RETRY_DELAY_S)
        raise AssertionError("unreachable")

    async def changed(self) -> Topology | None:
        """The topology if it changed since the last read (or a reload was asked for), else None.

        A bad file or an unreachable URL is logged and reads as unchanged.
        """
        requested, self._reload_requested = self._reload_requested, False
        try:
            if self._url is not None:
                return await self._fetch()
            if requested or self._file_stamp() != self._stamp:
                return self._read()
        except ConfigError as exc:
            log.error("keeping the current shards: %s", exc)
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _read(self) -> Topology:
        assert self._path is not None
        self._stamp = self._file_stamp()
        return load(self._path)

    def _file_stamp(self) -> FileStamp | None:
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    async def _fetch(self) -> Topology | None:
        """The topology the URL serves now; None if unchanged since the last fetch (304)."""
        assert self._url is not None and self._session is not None
        headers = {"If-None-Match": self._etag} if self._etag else {}
        try:
            async with self._session.get(self._url, headers=headers) as resp:
                if resp.status == 304:
                    return None
                if resp.status != 200:
                    raise TopologyUnavailable(f"{self._url} answered {resp.status}")
                raw = await resp.json(content_type=None)
                etag = resp.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TopologyUnavailable(f"cannot read the shard file at {self._url}: {exc!r}") from None
        try:
            topology = parse(raw)
        except ConfigError as exc:
            raise ConfigError(f"{self._url}: {exc}") from None
        self._etag = etag
        return topology
