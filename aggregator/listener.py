"""LISTEN for late writes on every shard.

Writers NOTIFY ``LATE_WRITES_CHANNEL`` with the hour of every committed batch
that touched an hour other than their current one. Each shard gets its own
connection (a LISTEN must stay on one session), reconnected when lost. A
frozen or cut-off server never closes the connection, so every second the
connection must answer a query within the shard timeout, or it is terminated
and made again. While it is down notifications are missed; the per-hour
version check catches those, and bounds how long a cached hour is trusted
(aggregator/past.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import asyncpg

from aggregator.shards import ShardHandle
from common.pg import keep_alive, redact
from common.schema import LATE_WRITES_CHANNEL

log = logging.getLogger(__name__)

# How long to wait before reconnecting a lost LISTEN connection.
RECONNECT_DELAY_S = 1.0
# How often a quiet connection must prove it is alive (a query within the timeout).
ALIVE_CHECK_S = 1.0


class LateWriteListener:
    def __init__(self, on_late_hour: Callable[[int], None], timeout_s: float) -> None:
        self._on_late_hour = on_late_hour
        self._timeout_s = timeout_s
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        # Shards whose LISTEN is in place right now.
        self.listening: set[str] = set()

    def sync(self, shards: Iterable[ShardHandle]) -> None:
        """Listen on exactly these shards: start new listeners, stop removed ones."""
        wanted = {(h.name, h.shard.dsn) for h in shards}
        for key in set(self._tasks) - wanted:
            self._tasks.pop(key).cancel()
        for key in wanted - set(self._tasks):
            self._tasks[key] = asyncio.create_task(self._listen(*key), name=f"listen-{key[0]}")

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self, name: str, dsn: str) -> None:
        while True:
            try:
                conn = await asyncpg.connect(dsn, timeout=self._timeout_s)
                keep_alive(conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("shard %s: cannot LISTEN yet (%s)", name, type(exc).__name__)
            else:
                await self._hold(name, dsn, conn)
            await asyncio.sleep(RECONNECT_DELAY_S)

    async def _hold(self, name: str, dsn: str, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            async with asyncio.timeout(self._timeout_s):
                await conn.add_listener(LATE_WRITES_CHANNEL, self._notified)
            log.info("shard %s: listening for late writes (%s)", name, redact(dsn))
            self.listening.add(name)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), ALIVE_CHECK_S)
                if conn.is_closed():
                    break
                async with asyncio.timeout(self._timeout_s):
                    await conn.fetchval("SELECT 1")
            log.warning("shard %s: LISTEN connection lost", name)
        except TimeoutError:
            log.warning("shard %s: LISTEN connection silent for %g s: dropped", name, self._timeout_s)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("shard %s: LISTEN failed (%s)", name, type(exc).__name__)
        finally:
            self.listening.discard(name)
            conn.terminate()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            hour = int(payload)
        except ValueError:
            log.warning("ignoring late-write notification %r", payload)
            return
        self._on_late_hour(hour)
