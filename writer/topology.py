"""What a writer knows of the topology, for batches: nginx's write ring and which writers are down.

Followed like an aggregator follows it (sharding/source.py), polled every
``REACTIONS_TOPOLOGY_POLL_MS``. A writer without a shard file or URL places
every event of a batch on its own shard. One whose shard file or URL cannot
be read (yet) still starts and takes single POSTs, which need no topology;
it refuses batches (503) until it has read it, rather than place them
where a single POST would not land.

Down writers mirror nginx's ``max_fails=1 fail_timeout=5s``: a writer that
refused a connection (or did not accept one in time) is skipped, its users
going to the next writer on the ring, for ``DOWN_FOR_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from common.retry import Waiting
from sharding.config import ConfigError, Shard, Topology
from sharding.placement import Placement
from sharding.source import TopologySource

log = logging.getLogger(__name__)

# nginx's fail_timeout for the writers (sharding/nginx.py, upstream_servers).
DOWN_FOR_S = 5.0


class WriterTopology:
    def __init__(self, source: TopologySource | None, own_dsn: str, sockets_dir: str = "") -> None:
        self._source = source
        self._own_dsn = own_dsn
        # Where nginx names the writers' Unix sockets (sharding/sockets.py): their names make the ring.
        self._sockets_dir = sockets_dir
        self.placement: Placement | None = None
        self._down_until: dict[str, float] = {}
        # Told in the log when its reason changes (and every few tries), and on /readyz.
        self.waiting = Waiting("the shard file, to place batches")

    @property
    def unknown(self) -> bool:
        """A topology is configured and has not been read yet: batches cannot be placed."""
        return self._source is not None and self.placement is None

    async def open(self) -> None:
        """One try at reading the topology; ``follow`` tries again until it is read."""
        if self._source is None:
            return
        try:
            self._apply(await self._source.open())
        except ConfigError as exc:
            self.waiting.failed(f"{exc}; batches are refused until it is read")
            return
        self.waiting.succeeded()

    async def follow(self, interval_s: float) -> None:
        """Re-read the topology every ``interval_s`` (a bad or unreachable file keeps the last one)."""
        if self._source is None:
            return
        while True:
            await asyncio.sleep(interval_s)
            if self.placement is None:
                await self.open()
                continue
            topology = await self._source.changed()
            if topology is not None:
                self._apply(topology)

    async def close(self) -> None:
        if self._source is not None:
            await self._source.close()

    def _apply(self, topology: Topology) -> None:
        self.placement = Placement.of(topology, self._sockets_dir)
        log.info("batches placed over %d writers of %d active shards", len(self.placement.shard_of),
                 len(topology.active_shards))

    def is_own(self, shard: Shard) -> bool:
        """Whether ``shard`` is this writer's database (a shard is named by its DSN in the shard file)."""
        return shard.dsn == self._own_dsn

    def down(self) -> set[str]:
        now = time.monotonic()
        return {w for w, until in self._down_until.items() if until > now}

    def mark_down(self, writer: str) -> None:
        self._down_until[writer] = time.monotonic() + DOWN_FOR_S
