"""Bytes on a socket to nginx on 127.0.0.1, and what the shards then hold.

Hostile input has to reach nginx exactly as written (no client library that
quotes, normalises or refuses it), so requests here are raw bytes.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from sharding.config import load as load_topology
from sharding.local.cluster import LocalCluster

# Every answer a hostile request may get through the entry point.
# 204/400/404/405/413/503: the HTTP contract (docs/contract.md). 414: nginx's own
# answer to a request line longer than one large_client_header_buffers buffer
# (8k by default, ngx_http_core_module docs).
ALLOWED_STATUSES = frozenset({204, 400, 404, 405, 413, 414, 503})
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Answer:
    statuses: tuple[int, ...]  # every status line read before the connection closed
    raw: bytes
    closed: bool  # the server closed the connection after answering

    @property
    def status(self) -> int:
        return self.statuses[0] if self.statuses else 0

    @property
    def body(self) -> bytes:
        return self.raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in self.raw else b""


def exchange(port: int, request: bytes, timeout_s: float = READ_TIMEOUT_S) -> Answer:
    """Send ``request`` and read until the server closes or stops sending."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        chunks, closed = [], False
        sock.settimeout(timeout_s)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                chunks.append(chunk)
                if b"Connection: close" in chunk or is_complete(b"".join(chunks)):
                    sock.settimeout(0.3)  # anything more (a second response) comes at once
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    raw = b"".join(chunks)
    return Answer(status_lines(raw), raw, closed)


def is_complete(raw: bytes) -> bool:
    """Whether the first response (headers and a Content-Length body, or no body) is all there."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(rest) >= int(line.split(b":", 1)[1])
    return True


def status_lines(raw: bytes) -> tuple[int, ...]:
    found = []
    for line in raw.split(b"\r\n"):
        if line.startswith(b"HTTP/1.") and len(line) >= 12 and line[9:12].isdigit():
            found.append(int(line[9:12]))
    return tuple(found)


def request(method: str, target: bytes | str, headers: Sequence[str] = (), body: bytes = b"",
            close: bool = True) -> bytes:
    """An HTTP/1.1 request with exactly this target and these header lines."""
    target_bytes = target.encode() if isinstance(target, str) else target
    lines = [b"%s %s HTTP/1.1" % (method.encode(), target_bytes), b"Host: 127.0.0.1"]
    lines += [h.encode() for h in headers]
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# -- what the shards hold -----------------------------------------------------


async def _fetch(cluster: LocalCluster, query: str, *args: object) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = []
    for shard in load_topology(cluster.shards_file).shards:
        conn = await asyncpg.connect(shard.dsn)
        try:
            rows += await conn.fetch(query, *args)
        finally:
            await conn.close()
    return rows


def stored_in_hour(cluster: LocalCluster, hour: int) -> list[tuple[int, str, int, str | None]]:
    """(ts, username, event, key) of every row of ``hour`` on every shard, sorted."""
    rows = asyncio.run(_fetch(cluster, "SELECT ts, username, event, idem_key FROM reactions WHERE hour = $1", hour))
    return sorted(((r["ts"], r["username"], r["event"], r["idem_key"]) for r in rows), key=repr)


def total_events(cluster: LocalCluster) -> tuple[int, int]:
    """(raw rows, events in the per-hour counters) over every shard: they grow together or not at all."""
    rows = asyncio.run(_fetch(cluster, "SELECT (SELECT count(*) FROM reactions) AS n, "
                                       "(SELECT coalesce(sum(clicks + impressions), 0) FROM hour_counts) AS c"))
    return sum(r["n"] for r in rows), sum(int(r["c"]) for r in rows)


def rollups_match_raw_events(cluster: LocalCluster) -> list[str]:
    """Per shard: hour_counts and hour_users are exactly what the raw events say (no partial event)."""
    mismatches = asyncio.run(_fetch(cluster, """
        WITH raw AS (
            SELECT hour, count(*) FILTER (WHERE event = 1) AS clicks,
                   count(*) FILTER (WHERE event = 2) AS impressions
            FROM reactions GROUP BY hour)
        SELECT 'counts of hour ' || coalesce(raw.hour, h.hour) AS what FROM raw FULL JOIN hour_counts h USING (hour)
        WHERE raw.clicks IS DISTINCT FROM h.clicks OR raw.impressions IS DISTINCT FROM h.impressions
        UNION ALL
        SELECT 'users of hour ' || coalesce(r.hour, u.hour)
        FROM (SELECT DISTINCT hour, username FROM reactions) r FULL JOIN hour_users u USING (hour, username)
        WHERE r.username IS NULL OR u.username IS NULL"""))
    return [r["what"] for r in mismatches]
