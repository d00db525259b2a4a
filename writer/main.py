"""The writer process: ``python -m writer.main`` (settings from the environment)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import asyncpg
import uvloop
from aiohttp import web

from common.events import Reaction
from common.hours import current_hour
from common.schema import migrate
from writer import db
from writer.batcher import BatchStats, Committer, DirectCommitter, GroupCommitter
from writer.keys import COMMITTER, METRICS, POOL, SETTINGS
from writer.metrics import WriterMetrics
from writer.routes import setup_routes
from writer.settings import Settings

log = logging.getLogger("reactions.writer")

# How long shutdown waits for requests in flight (they wait on the last commit).
SHUTDOWN_TIMEOUT_S = 30.0


def create_app(settings: Settings) -> web.Application:
    """Build the writer app; all I/O happens in ``database_ctx`` at start-up."""
    app = web.Application()
    app[SETTINGS] = settings
    app[METRICS] = WriterMetrics.create()
    app.cleanup_ctx.append(database_ctx)
    setup_routes(app)
    return app


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pool and the committer, made at start-up and drained at shutdown."""
    settings = app[SETTINGS]
    pool = await db.open_pool(settings.dsn, min_size=settings.flushers, max_size=settings.pool_size)
    async with pool.acquire() as conn:
        await migrate(conn)
    app[POOL] = pool
    app[COMMITTER] = committer = make_committer(settings, pool, app[METRICS])
    committer.start()
    app[METRICS].watch_pending(lambda: committer.pending)
    log.info("writer ready on %s:%d (batching=%s)", settings.host, settings.port, settings.batching)
    try:
        yield
    finally:
        await committer.close()
        await pool.close()
        log.info("writer drained and stopped")


def make_committer(settings: Settings, pool: asyncpg.Pool, metrics: WriterMetrics) -> Committer:
    async def commit(batch: Sequence[Reaction]) -> None:
        async with pool.acquire() as conn:
            await db.commit_batch(conn, batch, current_hour(), settings.commit_timeout_s)

    stats = BatchStats(on_commit=metrics.on_commit, on_failure=metrics.on_failure)
    if not settings.batching:
        return DirectCommitter(commit, queue_max=settings.queue_max_events, stats=stats)
    return GroupCommitter(
        commit,
        max_events=settings.batch_max_events,
        max_wait_s=settings.batch_max_wait_ms / 1000,
        queue_max=settings.queue_max_events,
        flushers=settings.flushers,
        stats=stats,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
