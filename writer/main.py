"""The writer process: ``python -m writer.main`` (settings from the environment)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Sequence

import aiohttp
import asyncpg
import uvloop
from aiohttp import web

from common.events import Reaction
from common.hours import current_hour
from common.partitions import Pruned
from common.pg import HeldConnections, WaitBounds, close_pool, redact
from common.retry import Backoff, Waiting, retry_forever
from common.tasks import running
from sharding.source import TopologySource
from writer import batch_views, db, retention
from writer.batch_db import Part, PartCommitted
from writer.batcher import BatchStats, Committer, DirectCommitter, GroupCommitter, OutcomeUnknown
from writer.batches import Dispatcher, Request
from writer.gate import ListenGate
from writer.health import DatabaseHealth
from writer.keys import BATCH_POOL, CLOCKS, COMMITTER, DISPATCHER, GATE, HEALTH, METRICS, POOL, SETTINGS, STARTING
from writer.metrics import WriterMetrics
from writer.routes import dispatcher
from writer.settings import Settings
from writer.settle import PEERS, Clocks
from writer.topology import WriterTopology

log = logging.getLogger("reactions.writer")

# How long shutdown waits for requests in flight (they wait on the last commit).
SHUTDOWN_TIMEOUT_S = 30.0


def create_app(settings: Settings) -> web.Application:
    """The writer's state and lifecycle; all I/O happens in its cleanup contexts, one per resource.

    Requests do not go through it: see ``started`` and writer/routes.py.
    """
    app = web.Application()
    app[SETTINGS] = settings
    app[METRICS] = WriterMetrics.create()
    app[CLOCKS] = clocks = Clocks(settings.clock_skew_margin_s)
    app[METRICS].watch_clocks(clocks.seconds, PEERS, settings.clock_skew_margin_s, settings.write_budget_s)
    app[GATE] = ListenGate(settings.host, settings.port, settings.unix_path)
    app[STARTING] = Waiting(f"its database {redact(settings.dsn)} (with the Reactions schema)")
    app.cleanup_ctx.extend([pool_ctx, committer_ctx, batches_ctx, health_ctx, retention_ctx])
    return app


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    """The connection pool, with the schema migrated before anything uses it.

    The database may not be there yet (parts start in any order): the writer
    tries again without end, each try bounded, and meanwhile its write port
    stays closed and /readyz (on the admin port) says what it waits for.
    """
    settings = app[SETTINGS]

    async def connect() -> asyncpg.Pool:
        return await db.open_migrated_pool(settings.dsn, min_size=settings.flushers, max_size=settings.pool_size,
                                           bounds=settings.bounds, connect_timeout_s=settings.connect_timeout_s)

    pool = await retry_forever(connect, app[STARTING], Backoff(settings.connect_backoff_max_s), db.NOT_YET)
    try:
        app[POOL] = pool
        yield
    finally:
        await close_pool(pool)


async def committer_ctx(app: web.Application) -> AsyncIterator[None]:
    """The group committer; on the way out it drains: every accepted event is committed or answered."""
    settings = app[SETTINGS]
    # Each flusher keeps its connection; one transaction per request (no batching) keeps none.
    connections = HeldConnections(app[POOL], settings.bounds, keep=settings.flushers if settings.batching else 0)
    app[COMMITTER] = committer = make_committer(app, connections)
    committer.start()
    app[METRICS].watch_pending(lambda: committer.pending)
    log.info("writer ready on %s:%d (batching=%s)", settings.host, settings.port, settings.batching)
    try:
        yield
    finally:
        await committer.close()
        await connections.close()
        log.info("writer drained and stopped")


async def health_ctx(app: web.Application) -> AsyncIterator[None]:
    """The heartbeat probe, which refuses writes and closes the listener while the database cannot commit."""
    settings, committer, gate, pool = app[SETTINGS], app[COMMITTER], app[GATE], app[POOL]
    name = f"{settings.host}:{settings.port}"

    def on_change(reason: str | None) -> None:
        if reason is None:
            committer.resume()
        else:
            committer.refuse(f"the shard's database is unavailable ({reason}); retry")
        gate.want_open(reason is None)

    async def probe(prove_space: bool) -> None:
        skew = await db.heartbeat(pool, settings.probe_bounds, name, prove_space)
        app[CLOCKS].observe("postgres", skew, estimate=True)

    health = DatabaseHealth(probe, on_change, interval_s=settings.probe_interval_s)
    app[HEALTH] = health
    app[METRICS].watch_database(lambda: health.up)
    async with running(health.run(), "database-health"):
        yield


async def retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """The raw log's upkeep (writer/retention.py), in its own task: partitions ahead, old days dropped."""
    settings, pool = app[SETTINGS], app[POOL]
    bounds = WaitBounds(acquire_s=settings.acquire_timeout_s, statement_s=retention.ROUND_TIMEOUT_S)

    async def maintain(today: int) -> tuple[list[int], list[Pruned]]:
        return await db.maintain_partitions(pool, bounds, today, settings.raw_retention_days,
                                            settings.batch_key_retention_days)

    async with running(retention.run(maintain), "raw-log-upkeep"):
        yield


async def batches_ctx(app: web.Application) -> AsyncIterator[None]:
    """Batches: the topology followed (sharding/source.py) and a client session for parts sent to other writers."""
    settings = app[SETTINGS]
    source = TopologySource(settings.shards_file, settings.shards_url, settings.batch_forward_timeout_s) \
        if settings.shards_file or settings.shards_url else None
    topology = WriterTopology(source, settings.dsn, settings.writer_sockets or "")
    await topology.open()
    # A pool of their own (lazy): batch parts never starve the flushers or the heartbeat of connections.
    app[BATCH_POOL] = pool = await db.open_pool(settings.dsn, min_size=0, max_size=settings.batch_pool_size,
                                                bounds=settings.bounds)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                                    auto_decompress=False)

    async def commit_here(request: Request, part: Part) -> PartCommitted:
        return await batch_views.commit_here(app, request, part)

    app[DISPATCHER] = Dispatcher(topology, session, commit_here, settings.batch_connect_timeout_s,
                                 settings.batch_forward_timeout_s)
    try:
        async with running(topology.follow(settings.topology_poll_s), "topology"):
            yield
    finally:
        await session.close()
        await topology.close()
        await close_pool(pool)


def make_committer(app: web.Application, connections: HeldConnections) -> Committer:
    settings, metrics = app[SETTINGS], app[METRICS]

    async def commit(batch: Sequence[Reaction], deadline: float) -> None:
        await db.commit_bounded(connections, settings.bounds, batch, current_hour(), deadline)

    def on_failure(size: int, exc: BaseException) -> None:
        metrics.on_failure(size, exc)
        if isinstance(exc, OutcomeUnknown) and HEALTH in app:
            app[HEALTH].commit_outcome_unknown(str(exc))
        elif isinstance(exc, db.CannotWrite) and HEALTH in app:
            app[HEALTH].cannot_write(str(exc))

    stats = BatchStats(on_commit=metrics.on_commit, on_failure=on_failure)
    if not settings.batching:
        return DirectCommitter(commit, queue_max=settings.queue_max_events, stats=stats)
    return GroupCommitter(
        commit,
        max_events=settings.batch_max_events,
        max_wait_s=settings.batch_max_wait_ms / 1000,
        queue_max=settings.queue_max_events,
        flushers=settings.flushers,
        max_queue_wait_s=settings.queue_wait_s,
        window_s=settings.commit_window_ms / 1000,
        stats=stats,
    )


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain. Signals only set an event that this loop waits on."""
    app = create_app(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # /healthz, /readyz and /metrics stay reachable on the admin port while the
    # gate is shut: while the writer waits for its database, and while it is down.
    admin = web.ServerRunner(web.Server(dispatcher(app, writes=False), access_log=None))
    try:
        if settings.admin_port is not None:
            await admin.setup()
            await web.TCPSite(admin, settings.host, settings.admin_port).start()
        async with started(app, until=stop):
            if not stop.is_set():  # else the start was given up
                await serve_writes(app, stop)
    finally:
        await admin.cleanup()


async def serve_writes(app: web.Application, stop: asyncio.Event) -> None:
    """Open the write port (the gate keeps it closed while the database is down) until ``stop``, then drain."""
    runner = web.ServerRunner(web.Server(dispatcher(app), access_log=None), shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        await app[GATE].start(runner)
        await stop.wait()
        log.info("stopping: draining the open batch")
    finally:
        await app[GATE].stop()
        await runner.cleanup()  # requests in flight are answered: the committer still runs


@contextlib.asynccontextmanager
async def started(app: web.Application, until: asyncio.Event | None = None) -> AsyncIterator[web.Application]:
    """The app's cleanup contexts entered (pool, committer, probe, upkeep), and left on the way out.

    The app is the writer's lifecycle and state only: requests are served by
    ``dispatcher`` on aiohttp's low-level server (writer/routes.py). If
    ``until`` is set before the start is done (a SIGTERM while the writer
    waits for its database), the start is given up: the contexts entered so
    far are left, and the body should do nothing.
    """
    # As aiohttp's AppRunner does: the contexts store their resources in the
    # app, which is frozen once they are in. A failed start leaves the
    # contexts already entered (cleanup leaves only those).
    app.on_startup.freeze()
    try:
        await start_unless(app, until)
        app.freeze()
        yield app
    finally:
        app.freeze()  # (after a failed start: its signals must be frozen to be sent)
        await app.shutdown()
        await app.cleanup()


async def start_unless(app: web.Application, until: asyncio.Event | None) -> None:
    """``app.startup()``, cancelled if ``until`` is set first (a failed start still raises)."""
    if until is None:
        await app.startup()
        return
    startup = asyncio.ensure_future(app.startup())
    stopped = asyncio.ensure_future(until.wait())
    try:
        await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        startup.cancel()  # (nothing, if it is done)
    with contextlib.suppress(asyncio.CancelledError):
        await startup


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings))


if __name__ == "__main__":
    main()
