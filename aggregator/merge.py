"""Merging shards' answers for one hour: sums of counters, size of the union of users."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aggregator.db import ShardHour, ShardHours, ShardIdentity, Stamp


def render_body(unique_users: int, clicks: int, impressions: int) -> bytes:
    """The exact response body of GET /analytics."""
    return f"unique_users,{unique_users}\nclicks,{clicks}\nimpressions,{impressions}\n".encode()


@dataclass(frozen=True, slots=True)
class HourAnswer:
    """A complete answer for one hour, each shard's stamp (database and version) it was read at, and when."""

    body: bytes
    stamps: Mapping[str, Stamp]
    read_at: float = 0.0  # time.monotonic() when the read started


def union_size(user_lists: Iterable[list[str]]) -> int:
    """Distinct users over shards: a user on two shards (failover, reshard) counts once."""
    union: set[str] = set()
    for users in user_lists:
        union.update(users)
    return len(union)


def merge(per_shard: Mapping[str, ShardHour], read_at: float = 0.0) -> HourAnswer:
    """Does not depend on the order in which shards answered."""
    hours = per_shard.values()
    body = render_body(
        union_size(h.users for h in hours),
        sum(h.clicks for h in hours),
        sum(h.impressions for h in hours),
    )
    return HourAnswer(body, {name: h.stamp for name, h in per_shard.items()}, read_at)


def merge_hours(per_shard: Mapping[str, ShardHours], hours: Iterable[int],
                read_at: float = 0.0) -> dict[int, HourAnswer]:
    """Each hour of a many-hour read merged exactly as a one-hour read would be."""
    return {hour: merge({name: shard.hour(hour) for name, shard in per_shard.items()}, read_at) for hour in hours}


def same_database(identities: Mapping[str, ShardIdentity]) -> dict[str, str]:
    """Shards that reached one database under two names, each with the reason it must not be summed."""
    by_database: defaultdict[tuple[int, int, str], list[str]] = defaultdict(list)
    for name, identity in identities.items():
        by_database[identity.database].append(name)
    clashes: dict[str, str] = {}
    for names in by_database.values():
        if len(names) > 1:
            for name in names:
                clashes[name] = f"is the same database as shard {', '.join(sorted(set(names) - {name}))}"
    return clashes
