"""The background refresh: shard file, live hours and the past-hour version check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aggregator.fanout import FanOut
from aggregator.listener import LateWriteListener
from aggregator.live import LiveHour, LiveHours, live_hours
from aggregator.metrics import AggregatorMetrics
from aggregator.past import PastHours
from aggregator.settings import Settings
from aggregator.shards import ShardSet

log = logging.getLogger(__name__)


class Refresher:
    def __init__(
        self,
        settings: Settings,
        shards: ShardSet,
        live: LiveHours,
        past: PastHours,
        listener: LateWriteListener | None,
        metrics: AggregatorMetrics,
        fanout: FanOut,
    ) -> None:
        self._settings = settings
        self._shards = shards
        self._live = live
        self._past = past
        self._listener = listener
        self._metrics = metrics
        self._fanout = fanout
        self._wake = asyncio.Event()
        metrics.publish_bounds(settings.refresh_interval_s, settings.stale_after_ms / 1000)

    def wake(self) -> None:
        """Refresh now rather than at the next tick (SIGHUP)."""
        self._wake.set()

    async def run(self) -> None:
        """Refresh forever, one tick per interval; a failing tick is logged, never fatal."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.refresh_interval_s)
            self._wake.clear()
            try:
                await self.tick()
            except Exception:
                log.exception("refresh failed")

    async def tick(self) -> None:
        """One refresh: follow the shard file, refresh the live hours, check cached versions."""
        started = time.monotonic()
        change = await self._shards.reload_if_changed()
        if change is not None:
            log.info("shards changed: added %s, removed %s", list(change.added), list(change.removed))
            self._past.clear("topology")
            self._live.forget_shards(change.removed)
            self._fanout.forget(change.removed)
            if self._listener is not None:
                self._listener.sync(self._shards)
        if not self._shards.ready:  # no shard list yet: an empty set would read as complete zeros
            return
        now = self._settings.clock()
        wanted = live_hours(now, self._settings.grace_s * 1000)
        complete, _ = await asyncio.gather(
            self._live.refresh(self._shards, wanted, now, self._retire),
            self._past.check_versions(self._shards),
        )
        if complete:
            self._metrics.last_complete_refresh = time.monotonic()
        self._metrics.refresh_seconds.observe(time.monotonic() - started)

    def _retire(self, live: LiveHour) -> None:
        """An hour that stops being live becomes a cached past hour if its answer is complete."""
        answer = live.complete_answer()
        if answer is not None and self._shards.names == set(answer.stamps):
            self._past.seed(live.hour, answer)
