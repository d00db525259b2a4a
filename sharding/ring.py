"""nginx's ``hash $key consistent`` ring, reproduced exactly in pure Python.

nginx (src/http/modules/ngx_http_upstream_hash_module.c) builds the ring once
per configuration:

- each ``server`` string is split into host and port at its last ``:``;
  ``base = crc32(host + b"\\0" + port)``;
- the server gets ``160 * weight`` points: point 0 is crc32 continued from
  ``base`` over four zero bytes, and point k is crc32 continued from ``base``
  over point k-1's four bytes, little-endian;
- all points are sorted by hash and duplicates are dropped (keeping one);
- a key goes to the first point whose hash is >= ``crc32(key)``, wrapping
  to point 0 past the end;
- when that point's server is down or was already tried, nginx walks on
  to the next point (clockwise) until it finds a server it may use.

The server strings are the ones written in the ``server`` directives, so
the ring must be built from exactly the addresses that nginx is given.
This module does no I/O.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

# nginx's constant: points per unit of weight.
POINTS_PER_WEIGHT = 160


def server_base_hash(server: str) -> int:
    """crc32(host "\\0" port), split the way nginx splits ``server`` strings."""
    raw = server.encode()
    if raw[:5].lower() == b"unix:":
        host, port = raw[5:], b""
    else:
        host, sep, port = raw.rpartition(b":")
        if not sep or not port.isdigit():
            host, port = raw, b""
    return zlib.crc32(port, zlib.crc32(b"\0", zlib.crc32(host)))


def server_points(server: str, weight: int = 1) -> list[int]:
    """The hashes of one server's points, in the order nginx makes them."""
    base = server_base_hash(server)
    points: list[int] = []
    previous = 0
    for _ in range(POINTS_PER_WEIGHT * weight):
        previous = zlib.crc32(previous.to_bytes(4, "little"), base)
        points.append(previous)
    return points


def key_hash(key: str | bytes) -> int:
    """The hash nginx looks up for a key (the raw bytes of the variable)."""
    return zlib.crc32(key.encode() if isinstance(key, str) else key)


@dataclass(frozen=True)
class Ring:
    """Sorted points and the server each belongs to."""

    hashes: tuple[int, ...]
    owners: tuple[str, ...]

    @classmethod
    def build(cls, servers: Iterable[str], weights: dict[str, int] | None = None,
              owner_of: Callable[[str], str] | None = None) -> Ring:
        """The ring nginx builds for an upstream with these ``server`` strings, in order.

        Each point's owner is its server string, or ``owner_of(server)`` (a
        writer's address when nginx names its Unix socket: sharding/sockets.py).
        """
        points: list[tuple[int, int, str]] = []
        for order, server in enumerate(servers):
            weight = (weights or {}).get(server, 1)
            points.extend((h, order, server) for h in server_points(server, weight))
        if not points:
            raise ValueError("a ring needs at least one server")
        # Equal hashes are so rare (32-bit values, 160 per server) that which
        # twin nginx's qsort keeps does not matter in practice; keep the first.
        points.sort()
        hashes: list[int] = []
        owners: list[str] = []
        for h, _, server in points:
            if not hashes or hashes[-1] != h:
                hashes.append(h)
                owners.append(server if owner_of is None else owner_of(server))
        return cls(tuple(hashes), tuple(owners))

    @property
    def servers(self) -> frozenset[str]:
        return frozenset(self.owners)

    def walk(self, key: str | bytes) -> tuple[str, ...]:
        """Every server once, in the order nginx's walk from ``key`` meets them.

        ``lookup(key, down)`` is the first of them not in ``down``: what a
        cache of walks (sharding/placement.py) answers without hashing again.
        """
        start = bisect.bisect_left(self.hashes, key_hash(key))
        wanted, seen = len(self.servers), []
        for step in range(len(self.hashes)):
            owner = self.owners[(start + step) % len(self.hashes)]
            if owner not in seen:
                seen.append(owner)
                if len(seen) == wanted:
                    break
        return tuple(seen)

    def lookup(self, key: str | bytes, down: Collection[str] = ()) -> str:
        """The server nginx sends ``key`` to, skipping the servers in ``down``."""
        return first_up(self.walk(key), down)


def first_up(walk: Iterable[str], down: Collection[str]) -> str:
    """The first server of a walk (``Ring.walk``) not in ``down``: where nginx's walk stops."""
    for server in walk:
        if server not in down:
            return server
    raise LookupError("every server of the ring is down")
