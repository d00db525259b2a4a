"""Merging shards' answers for one hour: sums of counters, size of the union of users."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aggregator.db import ShardHour


def render_body(unique_users: int, clicks: int, impressions: int) -> bytes:
    """The exact response body of GET /analytics."""
    return f"unique_users,{unique_users}\nclicks,{clicks}\nimpressions,{impressions}\n".encode()


@dataclass(frozen=True, slots=True)
class HourAnswer:
    """A complete answer for one hour and the per-shard versions it was read at."""

    body: bytes
    versions: Mapping[str, int]


def union_size(user_lists: Iterable[list[str]]) -> int:
    """Distinct users over shards: a user on two shards (failover, reshard) counts once."""
    union: set[str] = set()
    for users in user_lists:
        union.update(users)
    return len(union)


def merge(per_shard: Mapping[str, ShardHour]) -> HourAnswer:
    """Does not depend on the order in which shards answered."""
    hours = per_shard.values()
    body = render_body(
        union_size(h.users for h in hours),
        sum(h.clicks for h in hours),
        sum(h.impressions for h in hours),
    )
    return HourAnswer(body, {name: h.version for name, h in per_shard.items()})
