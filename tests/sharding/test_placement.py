"""A Placement's cache of walks answers exactly what nginx's ring walk answers, whatever is down."""

from __future__ import annotations

import bisect
import itertools
import random

import pytest

from sharding import placement as placement_module
from sharding.config import Shard, Topology
from sharding.placement import Placement, placement_key
from sharding.ring import Ring, key_hash

TOPOLOGY = Topology((
    Shard("a", ("127.0.0.1:18101", "127.0.0.1:18111"), "postgresql://a"),
    Shard("b", ("127.0.0.1:18102",), "postgresql://b"),
    Shard("c", ("127.0.0.1:18103",), "postgresql://c"),
    Shard("old", ("127.0.0.1:18104",), "postgresql://old", state="retired"),
))


def users(rng: random.Random, n: int) -> list[str]:
    alphabet = "abcxyz019 -_.~%/é用👍\u200d"
    return [f"u{rng.randrange(300)}" if rng.random() < 0.5 else
            "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12))) for _ in range(n)]


def nginx_walk(ring: Ring, key: str, down: frozenset[str]) -> str:
    """nginx's walk written out on its own (not through Ring.walk, which the cache and lookup share)."""
    start = bisect.bisect_left(ring.hashes, key_hash(key))
    for step in range(len(ring.hashes)):
        owner = ring.owners[(start + step) % len(ring.hashes)]
        if owner not in down:
            return owner
    raise LookupError("every server of the ring is down")


def uncached(placement: Placement, user: str, down: frozenset[str]) -> str | None:
    try:
        return nginx_walk(placement.ring, placement_key(user), down)
    except LookupError:
        return None


def cached(placement: Placement, user: str, down: frozenset[str]) -> str | None:
    try:
        return placement.writer(user, down)
    except LookupError:
        return None


def test_cached_walks_answer_as_the_ring_for_every_down_set() -> None:
    placement = Placement.of(TOPOLOGY)
    writers = sorted(placement.shard_of)
    assert "127.0.0.1:18104" not in writers  # a retired shard's writer is not on the ring
    down_sets = [frozenset(c) for k in range(len(writers) + 1) for c in itertools.combinations(writers, k)]
    rng = random.Random("placement")
    for user in users(rng, 3000):  # users repeat: later rounds answer from the cache
        for down in [*rng.sample(down_sets, 4), frozenset()]:
            assert cached(placement, user, down) == uncached(placement, user, down), (user, down)
    assert placement.walks  # the cache was used
    assert cached(placement, "anyone", frozenset(writers)) is None  # all down: LookupError, as the ring


def test_the_cache_is_bounded_and_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement_module, "CACHED_USERS", 10)
    placement = Placement.of(TOPOLOGY)
    rng = random.Random("bound")
    for user in users(rng, 200):
        assert cached(placement, user, frozenset()) == uncached(placement, user, frozenset())
        assert len(placement.walks) <= 10


def test_a_walk_meets_each_server_once_starting_where_the_lookup_lands() -> None:
    ring = Placement.of(TOPOLOGY).ring
    for user in users(random.Random("walk"), 500):
        walk = ring.walk(placement_key(user))
        assert sorted(walk) == sorted(ring.servers)
        assert walk[0] == ring.lookup(placement_key(user)) == nginx_walk(ring, placement_key(user), frozenset())
