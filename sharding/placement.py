"""Where a single POST of a user lands right now: the shard a batch puts its events on.

nginx hashes the ``user`` query argument as sent (``hash $reactions_user
consistent``, sharding/ring.py), so one username has as many hashes as
spellings. The canonical encoding is that of the query form: the username's
UTF-8 bytes percent-encoded, every byte but the unreserved characters of
RFC 3986 (``A-Z a-z 0-9 - . _ ~``) as ``%XX`` in upper case (Python's
``urllib.parse.quote(user, safe="")``). A single POST whose ``user=`` is sent
in this encoding lands where a batch places the same user (docs/contract.md, Batches).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from urllib.parse import quote

from sharding.config import Shard, Topology
from sharding.nginx import writer_addresses
from sharding.ring import Ring, first_up
from sharding.sockets import writer_server

# Users whose walk (sharding/ring.py ``Ring.walk``) a Placement keeps: a
# batch's users recur across batches, and quoting, hashing and the ring search
# are most of the cost of placing one. Past the bound the cache starts over.
CACHED_USERS = 65_536


def placement_key(user: str) -> str:
    """The canonical query-form encoding of ``user``: what nginx hashes for a POST that sends it so."""
    return quote(user, safe="")


@dataclass(frozen=True)
class Placement:
    """nginx's write ring over the active shards' writers, and the shard of each writer."""

    ring: Ring
    shard_of: dict[str, Shard]
    walks: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, topology: Topology, sockets_dir: str = "") -> Placement:
        """``sockets_dir``: nginx names the writers' Unix sockets there (sharding/sockets.py); owners stay addresses."""
        writers = writer_addresses(topology)  # the servers of nginx's upstream, in its order
        servers = {writer_server(w, sockets_dir): w for w in writers}
        return cls(Ring.build(servers, owner_of=servers.__getitem__),
                   {w: s for s in topology.active_shards for w in s.writers})

    def writer(self, user: str, down: Collection[str] = ()) -> str:
        """The writer nginx sends ``user`` to, walking on past the writers in ``down`` as nginx does."""
        walk = self.walks.get(user)
        if walk is None:
            if len(self.walks) >= CACHED_USERS:
                self.walks.clear()
            walk = self.walks[user] = self.ring.walk(placement_key(user))
        return first_up(walk, down)
