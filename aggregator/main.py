"""The aggregator process: ``python -m aggregator.main`` (settings from the environment)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable

import uvloop
from aiohttp import web

from aggregator.fanout import FanOut
from aggregator.keys import FANOUT, LISTENER, LIVE, METRICS, PAST, REFRESHER, SETTINGS, SHARDS
from aggregator.listener import LateWriteListener
from aggregator.live import LiveHours
from aggregator.metrics import AggregatorMetrics
from aggregator.past import PastHours
from aggregator.refresher import Refresher
from aggregator.routes import setup_routes
from aggregator.settings import Settings
from aggregator.shards import ShardSet

log = logging.getLogger("reactions.aggregator")


def create_app(settings: Settings) -> web.Application:
    """Build the aggregator app; all I/O happens in ``aggregator_ctx`` at start-up."""
    app = web.Application()
    app[SETTINGS] = settings
    app[METRICS] = AggregatorMetrics.create()
    app.cleanup_ctx.append(aggregator_ctx)
    setup_routes(app)
    return app


async def aggregator_ctx(app: web.Application) -> AsyncIterator[None]:
    """Pools, listeners and the refresher: made at start-up, stopped and closed on the way out."""
    settings, metrics = app[SETTINGS], app[METRICS]
    app[SHARDS] = shards = ShardSet(settings.shards_file, settings.shard_dsns, settings.pool_size)
    await shards.open()
    metrics.watch_shards(lambda: {(h.name, h.shard.state): 1.0 for h in shards})
    app[FANOUT] = fanout = FanOut(settings.shard_timeout_s, metrics, settings.cold_read_slots)
    app[LIVE] = live = LiveHours(fanout)
    app[PAST] = past = PastHours(settings.past_cache_hours, fanout, metrics)
    listener = None
    if settings.listen_for_late_writes:
        listener = LateWriteListener(lambda hour: past.invalidate(hour, "notify"), settings.shard_timeout_s)
        app[LISTENER] = listener
        listener.sync(shards)
    app[REFRESHER] = refresher = Refresher(settings, shards, live, past, listener, metrics)
    await refresher.tick()  # a first snapshot before serving (incomplete if a shard is down)
    task = asyncio.create_task(refresher.run(), name="refresher")
    def reload_shards() -> None:
        shards.request_reload()
        refresher.wake()

    stop_watching = watch_sighup(reload_shards)
    log.info("aggregator ready on %s:%d over %d shards", settings.host, settings.port, len(shards))
    try:
        yield
    finally:
        stop_watching()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if listener is not None:
            await listener.close()
        await past.close()
        await shards.close()


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
