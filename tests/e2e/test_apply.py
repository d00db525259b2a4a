"""``python -m sharding apply`` on a running local cluster: idempotent, a same-database move, refusals;
and the password, which is nowhere but in the passfile.

Adding a shard on another host with apply, under load, is in tests/hosts.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from common.schema import migrate
from sharding.config import RETIRED, load, save
from sharding.local.cluster import LocalCluster, port_of_dsn
from sharding.local.operations import status
from sharding.local.passfile import password_of
from sharding.local.postgres import PG_USER
from sharding.local.processes import free_port
from tests.support.cluster import base_url, own_past_hour_ts, post, sharding_cli, topology, unique_users


def generation(cluster: LocalCluster) -> str:
    return cluster.nginx_conf.read_text().split("Generation: ", 1)[1].split()[0]


def edited(cluster: LocalCluster, shards: list[dict[str, object]]) -> None:
    raw = {"shards": shards, "aggregators": list(topology(cluster).aggregators)}
    cluster.shards_file.write_text(json.dumps(raw))


@pytest.fixture
def restore(cluster: LocalCluster) -> Iterator[None]:
    """Whatever a test writes into the shard file, the next test finds the applied one."""
    yield
    save(load(cluster.applied_file), cluster.shards_file)


async def test_apply_without_edits_changes_nothing(cluster: LocalCluster) -> None:
    before = (cluster.applied_file.read_text(), generation(cluster))
    for _ in range(2):
        result = await sharding_cli(cluster, "apply")
        assert result.returncode == 0, result.stderr
        assert "nothing to do" in result.stdout
    assert (cluster.applied_file.read_text(), generation(cluster)) == before


async def other_database(dsn: str, name: str, schema: bool = True) -> str:
    """A database beside the shard's, on the same server: with the Reactions schema, another identity."""
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    other = dsn.rsplit("/", 1)[0] + f"/{name}"
    if not schema:
        return other
    conn = await asyncpg.connect(other)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return other


def respelled(dsn: str) -> str:
    """The same database by a DSN that the shard file cannot tell is the same (host and port in the query)."""
    return f"postgresql://postgres@/reactions?host=127.0.0.1&port={port_of_dsn(dsn)}"


@pytest.mark.usefixtures("restore")
async def test_unsafe_edits_are_refused_with_the_reason_and_change_nothing(cluster: LocalCluster) -> None:
    applied = topology(cluster)
    shards = [s.to_json() for s in applied.shards]
    a = shards[0]
    elsewhere = await other_database(str(a["dsn"]), "elsewhere")
    bare = await other_database(str(a["dsn"]), "bare", schema=False)
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/reactions"
    new = {"name": "new", "writers": ["127.0.0.1:1"], "state": "active"}
    cases = {  # apply is run by a person: what the entry host waits for at its first start, apply refuses at once
        "retired, not removed": shards[1:],
        "never renamed": [{**a, "name": "renamed"}, *shards[1:]],
        "reaches another database": [{**a, "dsn": elsewhere}, *shards[1:]],
        f"is already shard {a['name']}": [*shards, {**a, "name": "dup", "dsn": respelled(str(a["dsn"])),
                                                    "writers": ["127.0.0.1:1"]}],
        "has no Reactions schema: start its writers first": [*shards, {**new, "dsn": bare}],
        "cannot reach its database": [*shards, {**new, "dsn": nowhere}],
    }
    before = (cluster.applied_file.read_text(), generation(cluster))
    for reason, edit in cases.items():
        edited(cluster, edit)
        result = await sharding_cli(cluster, "apply")
        assert result.returncode == 1 and result.stderr.startswith("refused: "), (reason, result.stderr)
        assert reason in result.stderr
        assert (cluster.applied_file.read_text(), generation(cluster)) == before, f"{reason}: nothing changed"
    cluster.shards_file.write_text('{"shards": [')
    result = await sharding_cli(cluster, "apply")
    assert result.returncode == 1 and result.stderr.startswith("refused: ") and "not valid JSON" in result.stderr
    assert (cluster.applied_file.read_text(), generation(cluster)) == before


@pytest.mark.usefixtures("restore")
async def test_a_new_dsn_that_reaches_the_same_database_is_applied(cluster: LocalCluster) -> None:
    applied = topology(cluster)
    shards = [s.to_json() for s in applied.shards]
    moved = {**shards[0], "dsn": respelled(str(shards[0]["dsn"]))}
    edited(cluster, [moved, *shards[1:]])
    result = await sharding_cli(cluster, "apply")
    assert result.returncode == 0, result.stderr
    assert f"shard {moved['name']}: same database" in result.stdout
    assert load(cluster.applied_file).shard(str(moved["name"])).dsn == moved["dsn"]
    save(applied, cluster.shards_file)  # and back, the same way
    result = await sharding_cli(cluster, "apply")
    assert result.returncode == 0, result.stderr
    assert load(cluster.applied_file) == applied


def test_the_password_shows_nowhere_but_in_the_passfile(cluster: LocalCluster) -> None:
    """Not in the process list, status, the shard files, nginx's configuration or any log.

    docs/operations.md, The local stack."""
    secret = password_of(cluster.passfile, PG_USER)
    assert oct(cluster.passfile.stat().st_mode & 0o777) == "0o600"
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    places = {"ps": processes, "status": status(cluster)}
    for path in [cluster.shards_file, cluster.applied_file, cluster.nginx_conf, *cluster.root.glob("logs/*.log"),
                 *cluster.root.glob("pg/*/server.log"), *cluster.root.glob("run/*.json")]:
        places[str(path)] = path.read_text(errors="replace")
    assert len(places) > 8
    assert [name for name, text in places.items() if secret in text] == []
    for record in cluster.registry.all():
        environ = Path(f"/proc/{record.pid}/environ").read_bytes().decode(errors="replace")
        assert secret not in environ, f"{record.name}'s environment names the passfile, not the password"


@pytest.mark.usefixtures("restore")
async def test_a_retired_shard_that_holds_data_stays_in_the_file(cluster: LocalCluster) -> None:
    """Retire by apply; removing it from the file is then refused, as long as it holds rows."""
    victim = topology(cluster).shards[-1]
    conn = await asyncpg.connect(victim.dsn)
    try:
        held = await conn.fetchval("SELECT count(*) FROM reactions")
    finally:
        await conn.close()
    if not held:
        async with aiohttp.ClientSession() as session:
            for user in unique_users(60, "holder"):
                assert await post(session, f"{base_url(cluster)}/analytics?timestamp={own_past_hour_ts()}"
                                  f"&user={user}&click") == 204
    retired = topology(cluster).with_state(victim.name, RETIRED)
    save(retired, cluster.shards_file)
    result = await sharding_cli(cluster, "apply")
    assert result.returncode == 0 and f"shard {victim.name} retired" in result.stdout, result.stderr
    edited(cluster, [s.to_json() for s in retired.shards if s.name != victim.name])
    result = await sharding_cli(cluster, "apply")
    assert result.returncode == 1 and "holds data" in result.stderr, result.stderr
    assert load(cluster.applied_file) == retired
