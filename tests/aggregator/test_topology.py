"""The shard file: a shard added (or retired) is read without a restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from aggregator.keys import SHARDS
from sharding.config import ACTIVE, RETIRED, Shard, Topology, save
from tests.support.aggregator_app import Clock, MakeAggregator, body, get_hour, wait_for_body, wait_until, write


def shard_file(path: Path, dsns: list[str], retired: frozenset[str] = frozenset()) -> None:
    shards = tuple(
        Shard(name=name, writers=(f"127.0.0.1:{8101 + i}",), dsn=dsn, state=RETIRED if name in retired else ACTIVE)
        for i, (name, dsn) in enumerate(zip("abc", dsns, strict=False))
    )
    save(Topology(shards=shards), path)


async def test_added_shard_is_read_without_restart(shard_dsns: list[str], clock: Clock, tmp_path: Path,
                                                   make_aggregator: MakeAggregator) -> None:
    path = tmp_path / "shards.json"
    shard_file(path, shard_dsns[:2])
    past = clock.hour - 2
    for dsn, user in zip(shard_dsns, ("ann", "bob", "cy"), strict=True):
        await write(dsn, clock.hour, [user, "everyone"], clock.hour)
        await write(dsn, past, [user], clock.hour)
    client = await make_aggregator(shards_file=str(path))
    assert await get_hour(client, clock.hour) == (200, body(3, 4, 0))
    assert await get_hour(client, past) == (200, body(2, 2, 0))

    shard_file(path, shard_dsns, retired=frozenset({"a"}))  # c joins; a retires and is still read
    await wait_for_body(client, clock.hour, body(4, 6, 0))
    assert await get_hour(client, past) == (200, body(3, 3, 0))
    assert client.app[SHARDS].names == {"a", "b", "c"}


async def test_removed_shard_rebuilds_the_live_hour(shard_dsns: list[str], clock: Clock, tmp_path: Path,
                                                    make_aggregator: MakeAggregator) -> None:
    path = tmp_path / "shards.json"
    shard_file(path, shard_dsns)
    for dsn, user in zip(shard_dsns, ("ann", "bob", "cy"), strict=True):
        await write(dsn, clock.hour, [user], clock.hour)
    client = await make_aggregator(shards_file=str(path))
    assert await get_hour(client, clock.hour) == (200, body(3, 3, 0))
    shard_file(path, shard_dsns[:2])
    await wait_for_body(client, clock.hour, body(2, 2, 0))


async def test_shard_moved_to_another_database_is_read_afresh(shard_dsns: list[str], clock: Clock, tmp_path: Path,
                                                              make_aggregator: MakeAggregator) -> None:
    path = tmp_path / "shards.json"
    shard_file(path, shard_dsns[:2])
    await write(shard_dsns[0], clock.hour, ["ann"], clock.hour)
    await write(shard_dsns[1], clock.hour, ["cy"], clock.hour)
    await write(shard_dsns[2], clock.hour, ["bob", "dan"], clock.hour)  # version 1: a's cursor, not above it
    client = await make_aggregator(shards_file=str(path))
    assert await get_hour(client, clock.hour) == (200, body(2, 2, 0))
    shard_file(path, [shard_dsns[2], shard_dsns[1]])  # same name a, new database
    await wait_for_body(client, clock.hour, body(3, 3, 0))


async def test_bad_shard_file_keeps_the_current_shards(shard_dsns: list[str], clock: Clock, tmp_path: Path,
                                                       make_aggregator: MakeAggregator) -> None:
    path = tmp_path / "shards.json"
    shard_file(path, shard_dsns[:1])
    await write(shard_dsns[0], clock.hour, ["ann"], clock.hour)
    client = await make_aggregator(shards_file=str(path))
    path.write_text("{not json")
    await write(shard_dsns[0], clock.hour, ["bob"], clock.hour)
    await wait_for_body(client, clock.hour, body(2, 2, 0))
    assert client.app[SHARDS].names == {"a"}


async def test_sighup_reloads_at_once(shard_dsns: list[str], clock: Clock, tmp_path: Path,
                                                        make_aggregator: MakeAggregator) -> None:
    path = tmp_path / "shards.json"
    shard_file(path, shard_dsns[:2])
    client = await make_aggregator(shards_file=str(path), refresh_interval_s=3600.0)
    assert client.app[SHARDS].names == {"a", "b"}
    shard_file(path, shard_dsns)  # the 1-hour refresh would not see this in time; SIGHUP does
    os.kill(os.getpid(), signal.SIGHUP)

    async def three() -> bool:
        return client.app[SHARDS].names == {"a", "b", "c"}

    await wait_until(three, "the SIGHUP reload")
