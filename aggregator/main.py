"""The aggregator process: ``python -m aggregator.main`` (settings from the environment)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable

import uvloop
from aiohttp import web

from aggregator.fanout import FanOut
from aggregator.keys import FANOUT, HOURS, LISTENER, LIVE, METRICS, PAST, REFRESHER, SETTINGS, SHARDS
from aggregator.listener import LateWriteListener
from aggregator.live import LiveHours
from aggregator.metrics import AggregatorMetrics
from aggregator.past import PastHours
from aggregator.refresher import Refresher
from aggregator.routes import setup_routes
from aggregator.settings import Settings
from aggregator.shards import ShardSet
from aggregator.source import HourSource
from common.tasks import running

log = logging.getLogger("reactions.aggregator")


def create_app(settings: Settings) -> web.Application:
    """Build the aggregator app; all I/O happens in its cleanup contexts, one per resource."""
    app = web.Application()
    app[SETTINGS] = settings
    app[METRICS] = metrics = AggregatorMetrics.create()
    app[FANOUT] = fanout = FanOut(settings.shard_timeout_s, metrics, settings.cold_read_slots,
                                  settings.cold_slot_wait_s)
    app[LIVE] = live = LiveHours(fanout)
    app[PAST] = past = PastHours(settings.past_cache_hours, fanout, metrics, trust_s=settings.stale_after_ms / 1000)
    app[HOURS] = HourSource(live, past, fanout, settings)
    app.cleanup_ctx.extend([shards_ctx, past_ctx, listener_ctx, refresher_ctx, sighup_ctx])
    setup_routes(app)
    return app


async def shards_ctx(app: web.Application) -> AsyncIterator[None]:
    """One pool per shard of the shard file; until the file is read, the aggregator waits for it, not ready."""
    settings = app[SETTINGS]
    app[SHARDS] = shards = ShardSet(settings.shards_file, settings.shard_dsns, settings.pool_size,
                                    settings.shard_bounds, settings.shards_url)
    try:
        await shards.open()
        app[METRICS].watch_shards(lambda: {(h.name, h.shard.state): 1.0 for h in shards})
        yield
    finally:
        await shards.close()


async def past_ctx(app: web.Application) -> AsyncIterator[None]:
    """Past-hour reads still running are stopped on the way out."""
    try:
        yield
    finally:
        await app[PAST].close()


async def listener_ctx(app: web.Application) -> AsyncIterator[None]:
    """LISTEN for late writes on every shard (unless disabled)."""
    settings, past, shards = app[SETTINGS], app[PAST], app[SHARDS]
    if not settings.listen_for_late_writes:
        yield
        return
    app[LISTENER] = listener = LateWriteListener(lambda hour: past.invalidate(hour, "notify"),
                                                 settings.shard_timeout_s)
    listener.sync(shards)
    try:
        yield
    finally:
        await listener.close()


async def refresher_ctx(app: web.Application) -> AsyncIterator[None]:
    """A first snapshot before serving (incomplete if a shard is down), then one refresh per interval."""
    settings = app[SETTINGS]
    refresher = Refresher(settings, app[SHARDS], app[LIVE], app[PAST], app.get(LISTENER), app[METRICS], app[FANOUT])
    app[REFRESHER] = refresher
    await refresher.tick()
    async with running(refresher.run(), "refresher"):
        shards = app[SHARDS]
        if shards.ready:
            log.info("aggregator ready on %s:%d over %d shards", settings.host, settings.port, len(shards))
        else:
            log.info("aggregator on %s:%d, not ready: %s", settings.host, settings.port, shards.waiting.describe())
        yield


async def sighup_ctx(app: web.Application) -> AsyncIterator[None]:
    """SIGHUP re-reads the shard file now: the handler only sets a flag and wakes the refresher."""
    shards, refresher = app[SHARDS], app[REFRESHER]

    def reload_shards() -> None:
        shards.request_reload()
        refresher.wake()

    stop_watching = watch_sighup(reload_shards)
    try:
        yield
    finally:
        stop_watching()


def watch_sighup(on_hup: Callable[[], None]) -> Callable[[], None]:
    """Call ``on_hup`` on SIGHUP; return the function that stops watching."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread: no signals
        return lambda: None

    def stop() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return stop


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
