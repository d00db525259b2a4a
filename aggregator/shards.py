"""ShardSet: one asyncpg pool per shard, following the shard file.

The shard file is followed by sharding/source.py (a polled path, or a URL on
the entry host's internal topology port, ``REACTIONS_SHARDS_URL``), on every
refresh and on SIGHUP; writers follow it through the same code. Added shards
get a pool; removed ones have theirs closed. Retired shards stay in the set:
they take no writes but their data is still read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg

from common.pg import (
    WaitBounds,
    close_pool,
    create_pool_with_retry,
    init_connection,
    keep_session,
    redact,
    server_settings,
)
from sharding.config import ACTIVE, Shard
from sharding.source import TopologySource

log = logging.getLogger(__name__)

SESSION_SETTINGS = {"application_name": "reactions-aggregator"}


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
        self._source = TopologySource(shards_file, shards_url, bounds.statement_s) \
            if shards_file is not None or shards_url is not None else None
        self._dsns = dsns
        self._pool_size = pool_size
        self._bounds = bounds
        self._handles: dict[str, ShardHandle] = {}

    def __iter__(self) -> Iterator[ShardHandle]:
        return iter(list(self._handles.values()))

    def __len__(self) -> int:
        return len(self._handles)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._handles)

    def request_reload(self) -> None:
        """Re-read the shard file on the next refresh (SIGHUP)."""
        if self._source is not None:
            self._source.request_reload()

    async def open(self) -> None:
        """Read the shard list for the first time; a bad shard file fails start-up."""
        if self._source is None:
            await self._apply(shards_from_dsns(self._dsns))
            return
        await self._apply((await self._source.open()).shards)

    async def reload_if_changed(self) -> TopologyChange | None:
        """Re-read the file if it changed or a reload was asked for; keep the old set if it is bad."""
        if self._source is None:
            return None
        topology = await self._source.changed()
        if topology is None:
            return None
        change = await self._apply(topology.shards)
        return change if change.added or change.removed else None

    async def close(self) -> None:
        handles, self._handles = list(self._handles.values()), {}
        await asyncio.gather(*(close_pool(h.pool) for h in handles))
        if self._source is not None:
            await self._source.close()

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
        return await create_pool_with_retry(
            # Idle connections are kept (asyncpg closes them after 300 s by default): a new one
            # costs several round trips, too many for the shard timeout over a slow link.
            dsn, attempts=1, min_size=0, max_size=self._pool_size, timeout=self._bounds.acquire_s,
            max_inactive_connection_lifetime=0,
            server_settings=server_settings(self._bounds, **SESSION_SETTINGS), init=init_connection,
            reset=keep_session,
        )


