"""Connecting to a shard's PostgreSQL: bounded waits always.

A frozen server (a paused VM, a stuck disk) or a silent network partition
answers nothing and resets nothing: every wait on it must carry its own bound
(docs/design.md, Invariants: every wait is bounded). Three layers keep that:

- server-side limits (``statement_timeout``, ``lock_timeout``,
  ``idle_in_transaction_session_timeout``), so that where PostgreSQL can end a
  slow statement, it reports it, and the rollback is certain;
- TCP keepalives and ``tcp_user_timeout`` on both ends, so that a dead peer is
  noticed by the kernel even on a connection nobody is waiting on;
- client-side bounds on acquiring a connection, on every query and on giving
  the connection back. A connection whose query timed out is terminated, never
  handed back: asyncpg would otherwise send a cancel and wait, without limit,
  for the frozen server to acknowledge it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

log = logging.getLogger(__name__)

# Dead-peer detection by the kernel: probe an idle connection after 2 s, every
# 1 s, give up after 3 unanswered probes; unacknowledged data fails after 5 s.
KEEPALIVE_IDLE_S = 2
KEEPALIVE_INTERVAL_S = 1
KEEPALIVE_COUNT = 3
USER_TIMEOUT_MS = 5000
# How often a backend checks that its client is still there while it runs a
# statement: a writer that gave up on a commit should not have it commit later.
CLIENT_CHECK_INTERVAL_MS = 1000


@dataclass(frozen=True)
class WaitBounds:
    """How long to wait for a connection, for one statement, and to give the connection back."""

    acquire_s: float
    statement_s: float
    release_s: float = 0.5

    @property
    def server_statement_ms(self) -> int:
        """The server's own statement limit: earlier than ours, so that it reports a rollback first."""
        return max(1, int(self.statement_s * 1000 * 0.8))


def server_settings(bounds: WaitBounds, **extra: str) -> dict[str, str]:
    """Session settings sent at connect time (they survive RESET ALL: they are the session's defaults)."""
    statement_ms = bounds.server_statement_ms
    return {
        "statement_timeout": str(statement_ms),
        "lock_timeout": str(statement_ms),
        "idle_in_transaction_session_timeout": str(max(1000, 4 * statement_ms)),
        "tcp_keepalives_idle": str(KEEPALIVE_IDLE_S),
        "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_S),
        "tcp_keepalives_count": str(KEEPALIVE_COUNT),
        "tcp_user_timeout": str(USER_TIMEOUT_MS),
        "client_connection_check_interval": str(CLIENT_CHECK_INTERVAL_MS),
        **extra,
    }


def keep_alive(conn: asyncpg.Connection) -> None:
    """TCP keepalive and user timeout on the client's socket.

    asyncpg has no connection option for these; its transport's socket is
    reachable only through the private ``_transport``. A Unix socket or a
    transport without one is left as it is.
    """
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Pool ``init`` hook: every new connection gets client-side keepalives."""
    keep_alive(conn)


async def keep_session(conn: asyncpg.Connection) -> None:
    """Pool ``reset`` hook: Reactions sessions hold no state to reset.

    asyncpg's default reset sends a query (unlock, CLOSE ALL, UNLISTEN,
    RESET ALL) on every release: one more round trip per use, and one more
    wait on a server that may be frozen.
    """


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` leaves the session's state unknown (lost, cut, shut down, timed out)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state.startswith(("08", "57P"))
    return isinstance(exc, (TimeoutError, OSError, asyncpg.InterfaceError, asyncio.CancelledError))


@contextlib.asynccontextmanager
async def bounded_connection(pool: asyncpg.Pool, bounds: WaitBounds) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection, acquired within ``bounds.acquire_s`` and given back within ``bounds.release_s``.

    The caller bounds its own statements (``asyncio.timeout(bounds.statement_s)``).
    If the body ends with a timeout, a cancellation or a lost connection, the
    connection is terminated rather than reused: its server may be frozen
    mid-statement, and a graceful release would wait for it.
    """
    conn = await pool.acquire(timeout=bounds.acquire_s)
    try:
        yield conn
    except BaseException as exc:
        if leaves_connection_unknown(exc):
            terminate(conn)
        raise
    finally:
        await release(pool, conn, bounds)


def leaves_connection_unknown(exc: BaseException) -> bool:
    """Whether ``exc``, or the error it was raised from, leaves the session's state unknown."""
    return is_connection_error(exc) or (exc.__cause__ is not None and is_connection_error(exc.__cause__))


def terminate(conn: asyncpg.Connection) -> None:
    """Close at once, without a word to the server (which may be frozen mid-statement)."""
    # A connection the server closed is already back in the pool (asyncpg released it).
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


async def release(pool: asyncpg.Pool, conn: asyncpg.Connection, bounds: WaitBounds) -> None:
    try:
        await pool.release(conn, timeout=bounds.release_s)
    except Exception as exc:  # a release that fails has terminated the connection: nothing to keep
        log.debug("connection released with %s", type(exc).__name__)


def is_open(conn: asyncpg.Connection) -> bool:
    """Whether a pooled connection is still ours and open."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:  # the server closed it and asyncpg gave it back to the pool itself
        return False


class HeldConnections:
    """Connections taken from a pool once and kept between uses, for a hot path (the writer's commits).

    ``bounded_connection`` acquires and releases with bounded waits, and
    asyncpg bounds each of them with a task of its own: about 100 µs of CPU
    per use (docs/performance.md). Here a connection is acquired (within
    ``bounds.acquire_s``) only when none is held, kept after a use that went
    well, and terminated and given back after one that leaves its state
    unknown. At most ``keep`` are kept (as many as there are concurrent
    users: a connection kept beyond them would starve the pool's other
    waiters). ``close`` gives the kept ones back; the pool closes after it.
    """

    def __init__(self, pool: asyncpg.Pool, bounds: WaitBounds, keep: int = 1) -> None:
        self._pool = pool
        self._bounds = bounds
        self._keep = keep
        self._idle: list[asyncpg.Connection] = []

    async def take(self) -> asyncpg.Connection:
        while self._idle:
            conn = self._idle.pop()
            if is_open(conn):
                return conn
            await release(self._pool, conn, self._bounds)
        return await self._pool.acquire(timeout=self._bounds.acquire_s)

    async def give_back(self, conn: asyncpg.Connection, failure: BaseException | None = None) -> None:
        """Keep ``conn`` for the next use; terminate and release it if ``failure`` leaves it in doubt."""
        if failure is not None and leaves_connection_unknown(failure):
            terminate(conn)
        elif len(self._idle) < self._keep:
            self._idle.append(conn)
            return
        await release(self._pool, conn, self._bounds)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await release(self._pool, conn, self._bounds)


# A pool that cannot close this fast (a connection to a frozen server) is terminated.
POOL_CLOSE_TIMEOUT_S = 1.0


async def close_pool(pool: asyncpg.Pool, timeout_s: float = POOL_CLOSE_TIMEOUT_S) -> None:
    """Close gracefully within ``timeout_s``, else terminate: a frozen server never says goodbye."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        pool.terminate()


def redact(dsn: str) -> str:
    """A DSN without its password, for logs."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
