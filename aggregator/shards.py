"""ShardSet: one asyncpg pool per shard, following the shard file.

The file is polled (its mtime, inode and size) on every refresh and re-read
on SIGHUP. An aggregator on another host than the entry host follows the
shard file by URL instead (``REACTIONS_SHARDS_URL``, served by the entry
host's nginx on its internal topology port): fetched on every refresh with
``If-None-Match``, so that an unchanged file costs a 304. Added shards get a
pool; removed ones have theirs closed. Retired shards stay in the set: they
take no writes but their data is still read.

Until a shard list is first read, the set is not ``ready``: the file may not
be written yet, or the entry host may not serve it yet (parts start in any
order). Every refresh tries again (each try bounded), and ``waiting`` says
what is waited for; the aggregator answers 503 meanwhile and never exits for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import asyncpg

from common.pg import WaitBounds, close_pool, init_connection, keep_session, redact, server_settings
from common.retry import Waiting, failure_text
from sharding.config import ACTIVE, ConfigError, Shard, load, parse

log = logging.getLogger(__name__)

SESSION_SETTINGS = {"application_name": "reactions-aggregator"}
FileStamp = tuple[int, int, int]


class TopologyUnavailable(ConfigError):
    """The shard file's URL did not answer, or answered something else than a shard file."""


@dataclass(frozen=True)
class ShardHandle:
    """A shard of the set and its pool (which connects lazily)."""

    shard: Shard
    pool: asyncpg.Pool

    @property
    def name(self) -> str:
        return self.shard.name


@dataclass(frozen=True)
class TopologyChange:
    added: tuple[str, ...]
    removed: tuple[str, ...]


def shards_from_dsns(dsns: tuple[str, ...]) -> tuple[Shard, ...]:
    """The fallback shard list: names s0, s1, ... in the order given."""
    return tuple(Shard(name=f"s{i}", writers=(), dsn=dsn, state=ACTIVE) for i, dsn in enumerate(dsns))


class ShardSet:
    def __init__(self, shards_file: str | None, dsns: tuple[str, ...], pool_size: int, bounds: WaitBounds,
                 shards_url: str | None = None) -> None:
        self._file = shards_file
        self._url = shards_url
        self._etag: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._dsns = dsns
        self._pool_size = pool_size
        self._bounds = bounds
        self._handles: dict[str, ShardHandle] = {}
        self._stamp: FileStamp | None = None
        self._reload_requested = False
        self.waiting = Waiting(f"the shard file at {shards_url}" if shards_url else f"the shard file {shards_file}")

    @property
    def ready(self) -> bool:
        """Whether a shard list was read (until then the set is empty, and nothing may be answered from it)."""
        return self.waiting.done

    def __iter__(self) -> Iterator[ShardHandle]:
        return iter(list(self._handles.values()))

    def __len__(self) -> int:
        return len(self._handles)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._handles)

    def request_reload(self) -> None:
        """Re-read the shard file on the next refresh (SIGHUP)."""
        self._reload_requested = True

    async def open(self) -> None:
        """Try to read the shard list for the first time (one bounded try); see ``ready``."""
        if self._url is not None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._bounds.statement_s))
        await self._first_read()

    async def reload_if_changed(self) -> TopologyChange | None:
        """Re-read the file if it changed or a reload was asked for; keep the old set if it is bad."""
        if not self.ready:
            return await self._first_read()
        if self._url is not None:
            return await self._reload_from_url()
        if self._file is None or not (self._reload_requested or self._file_stamp() != self._stamp):
            return None
        self._reload_requested = False
        try:
            shards = self._read_shards()
        except ConfigError as exc:
            log.error("keeping the current shards: %s", exc)
            return None
        change = await self._apply(shards)
        return change if change.added or change.removed else None

    async def _first_read(self) -> TopologyChange | None:
        """One try at the first shard list: the set becomes ready, or ``waiting`` says why not."""
        self._reload_requested = False
        try:
            shards = await self._fetch_shards() if self._url is not None else self._read_shards()
        except ConfigError as exc:  # not there yet, not served yet, or not a shard file (yet)
            self.waiting.failed(str(exc))
            return None
        if shards is None:  # 304: nothing read yet, so nothing to compare with (never sent before a 200)
            return None
        change = await self._apply(shards)
        self.waiting.succeeded()
        return change

    async def _reload_from_url(self) -> TopologyChange | None:
        self._reload_requested = False
        try:
            shards = await self._fetch_shards()
        except ConfigError as exc:
            log.error("keeping the current shards: %s", exc)
            return None
        if shards is None:
            return None
        change = await self._apply(shards)
        return change if change.added or change.removed else None

    async def _fetch_shards(self) -> tuple[Shard, ...] | None:
        """The shards the URL serves now; None if unchanged since the last fetch (304)."""
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
            raise TopologyUnavailable(f"cannot read the shard file at {self._url}: {failure_text(exc)}") from None
        try:
            shards = parse(raw).shards
        except ConfigError as exc:
            raise ConfigError(f"{self._url}: {exc}") from None
        self._etag = etag
        return shards

    async def close(self) -> None:
        handles, self._handles = list(self._handles.values()), {}
        await asyncio.gather(*(close_pool(h.pool) for h in handles))
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _read_shards(self) -> tuple[Shard, ...]:
        if self._file is None:
            return shards_from_dsns(self._dsns)
        self._stamp = self._file_stamp()
        return load(self._file).shards

    def _file_stamp(self) -> FileStamp | None:
        assert self._file is not None
        try:
            st = os.stat(self._file)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    async def _apply(self, shards: tuple[Shard, ...]) -> TopologyChange:
        wanted = {s.name: s for s in shards}
        removed = [h for name, h in self._handles.items() if name not in wanted or wanted[name].dsn != h.shard.dsn]
        for handle in removed:
            del self._handles[handle.name]
        added = []
        for shard in shards:
            if shard.name in self._handles:  # same DSN: only the state may differ
                self._handles[shard.name] = ShardHandle(shard, self._handles[shard.name].pool)
                continue
            pool = await self._open_pool(shard.dsn)
            self._handles[shard.name] = ShardHandle(shard, pool)
            added.append(shard.name)
            log.info("reading shard %s (%s, %s)", shard.name, redact(shard.dsn), shard.state)
        await asyncio.gather(*(close_pool(h.pool) for h in removed))
        return TopologyChange(tuple(added), tuple(h.name for h in removed))


    async def _open_pool(self, dsn: str) -> asyncpg.Pool:
        """A lazy pool (min_size 0: nothing connects here), its sessions bounded server-side too."""
        return await asyncpg.create_pool(
            # Idle connections are kept (asyncpg closes them after 300 s by default): a new one
            # costs several round trips, too many for the shard timeout over a slow link.
            dsn, min_size=0, max_size=self._pool_size, timeout=self._bounds.acquire_s,
            max_inactive_connection_lifetime=0,
            server_settings=server_settings(self._bounds, **SESSION_SETTINGS), init=init_connection,
            reset=keep_session,
        )


