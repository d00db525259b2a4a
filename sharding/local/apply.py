"""``python -m sharding apply``: bring the running cluster to the shard file, in the one safe order.

Runs on the entry host, beside nginx and DATA_DIR (``run`` or ``entry`` holds
it). It starts nothing: the parts it adds run on their own hosts, started by
the user or their engine; it checks that they are there and ready. Each step
is printed; an unsafe edit is refused with the reason (sharding/apply.py):

1. each new shard's database: reachable (with the passfile's password), has
   the Reactions schema, and is not already another shard (its identity);
   a shard's new DSN must reach the same identity;
2. each new shard's writers answer ``/readyz``, and so do new aggregators;
3. ``applied.json`` is written: every aggregator reads it (locally from disk,
   on other hosts from nginx's topology port); wait until every aggregator
   of the file reads every shard, with the identity checked in 1;
4. only then nginx is re-rendered and reloaded: no write reaches a shard that
   an aggregator does not read.

Idempotent: when the file says what is applied, nothing is done.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from sharding.apply import Identity, Plan, Refused, moved_refusal, plan, same_database_refusal
from sharding.config import ConfigError, Shard, Topology, load, redact_password, save
from sharding.local.cluster import ClusterError, LocalCluster
from sharding.local.entry import reload_nginx, require_running, step
from sharding.local.processes import alive, http_get, wait_for

# Connecting to a shard's database and each statement of the checks.
DATABASE_CHECK_TIMEOUT_S = 5.0
# A new shard's writers or a new aggregator: how long they may take to answer /readyz.
READY_TIMEOUT_S = 30.0
# How long every aggregator may take to read a new shard (it re-reads the file every refresh).
AGGREGATOR_PICKUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DatabaseFacts:
    identity: Identity | None  # None: no Reactions schema
    holds_data: bool


@dataclass
class IdentityRecord:
    """DATA_DIR/identities.json: the identity apply checked per shard, and the names of removed shards."""

    shards: dict[str, Identity]
    removed: set[str]

    @classmethod
    def read(cls, path: Path) -> IdentityRecord:
        if not path.exists():
            return cls({}, set())
        raw = json.loads(path.read_text())
        return cls({k: (v[0], v[1]) for k, v in raw["shards"].items()}, set(raw["removed"]))

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".new")
        tmp.write_text(json.dumps({"shards": {k: list(v) for k, v in sorted(self.shards.items())},
                                   "removed": sorted(self.removed)}, indent=2) + "\n")
        os.replace(tmp, path)


async def inspect_database(dsn: str, passfile: Path) -> DatabaseFacts:
    """Reach the database (bounded) and read its identity and whether it holds events."""
    conn = await asyncpg.connect(dsn, passfile=str(passfile), timeout=DATABASE_CHECK_TIMEOUT_S)
    try:
        async with asyncio.timeout(DATABASE_CHECK_TIMEOUT_S):
            has_schema = await conn.fetchval("SELECT to_regclass('schema_info') IS NOT NULL "
                                             "AND to_regprocedure('reactions_identity()') IS NOT NULL")
            if not has_schema:
                return DatabaseFacts(None, False)
            row = await conn.fetchrow("SELECT system_identifier::text, shard_uuid::text FROM reactions_identity()")
            holds = await conn.fetchval("SELECT EXISTS (SELECT 1 FROM reactions)")
            return DatabaseFacts((row[0], row[1]), bool(holds))
    finally:
        conn.terminate()


def database_facts(shard: Shard, passfile: Path) -> DatabaseFacts:
    try:
        return asyncio.run(inspect_database(shard.dsn, passfile))
    except asyncpg.InvalidPasswordError:
        raise Refused(f"shard {shard.name}: {redact_password(shard.dsn)} refused the password of {passfile} "
                      "(copy the cluster's passfile to that host's PostgreSQL, "
                      "docs/operations.md, Running on several hosts)"
                      ) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise Refused(f"shard {shard.name}: cannot reach its database {redact_password(shard.dsn)} "
                      f"({type(exc).__name__}: {exc})") from None


def known_identities(cluster: LocalCluster, current: Topology, record: IdentityRecord) -> dict[str, Identity]:
    """Every applied shard's identity: recorded, else read now (a shard that cannot be read is skipped)."""
    known = dict(record.shards)
    for shard in current.shards:
        if shard.name not in known:
            try:
                facts = database_facts(shard, cluster.passfile)
            except Refused:
                continue
            if facts.identity is not None:
                known[shard.name] = facts.identity
    return known


def check_new_shard(cluster: LocalCluster, shard: Shard, known: dict[str, Identity]) -> Identity:
    step(f"shard {shard.name}: checking its database {redact_password(shard.dsn)}")
    facts = database_facts(shard, cluster.passfile)
    if facts.identity is None:
        raise Refused(f"shard {shard.name}: its database has no Reactions schema: start its writers first "
                      "(a writer creates the schema), then apply again")
    refusal = same_database_refusal(shard, facts.identity, known)
    if refusal is not None:
        raise refusal
    step(f"shard {shard.name}: reachable, schema present, a database of its own "
         f"(system_identifier {facts.identity[0]}, shard_uuid {facts.identity[1]})")
    return facts.identity


def check_moved_shard(cluster: LocalCluster, shard: Shard, known: dict[str, Identity]) -> Identity:
    step(f"shard {shard.name}: checking that its new DSN {redact_password(shard.dsn)} reaches the same database")
    facts = database_facts(shard, cluster.passfile)
    if facts.identity is None:
        raise Refused(f"shard {shard.name}: the new DSN reaches a database without the Reactions schema")
    refusal = moved_refusal(shard, facts.identity, known.get(shard.name))
    if refusal is not None:
        raise refusal
    step(f"shard {shard.name}: same database (system_identifier {facts.identity[0]})")
    return facts.identity


def check_removed_shard(cluster: LocalCluster, shard: Shard) -> None:
    step(f"shard {shard.name}: removed from the file; checking that it holds no data")
    if database_facts(shard, cluster.passfile).holds_data:
        raise Refused(f"shard {shard.name} holds data: it stays in the file, retired (its rows are still "
                      "counted); only an empty shard is removed")


def check_ready(what: str, address: str) -> None:
    step(f"{what}: waiting for {address}/readyz")
    if not wait_for(lambda: http_get(f"http://{address}/readyz")[0] == 200, READY_TIMEOUT_S):
        raise Refused(f"{what} at {address} is not ready after {READY_TIMEOUT_S:.0f}s: start it (on its host) "
                      "and apply again; nothing was changed")


def aggregator_reads(address: str, shards: tuple[Shard, ...], expected: dict[str, Identity]) -> bool:
    """Whether the aggregator lists every shard, and reads the expected ones with the checked identity."""
    status, _, text = http_get(f"http://{address}/shards")
    if status != 200:
        return False
    try:
        listed = {s["name"]: s for s in json.loads(text)["shards"]}
    except (ValueError, KeyError, TypeError):
        return False
    for shard in shards:
        seen = listed.get(shard.name)
        if seen is None:
            return False
        if shard.name in expected:
            identity = seen.get("identity") or {}
            if not seen.get("healthy") or (identity.get("system_identifier"), identity.get("shard_uuid")) \
                    != expected[shard.name]:
                return False
    return True


def wait_aggregators(cluster: LocalCluster, desired: Topology, expected: dict[str, Identity]) -> None:
    for record in cluster.registry.all("aggregator"):
        if alive(record):
            os.kill(record.pid, signal.SIGHUP)  # a local aggregator re-reads the file now
    for address in desired.aggregators:
        if not wait_for(lambda a=address: aggregator_reads(a, desired.shards, expected),  # type: ignore[misc]
                        AGGREGATOR_PICKUP_TIMEOUT_S):
            raise ClusterError(f"aggregator {address} does not read every shard after "
                               f"{AGGREGATOR_PICKUP_TIMEOUT_S:.0f}s; nginx was NOT reloaded, so no write reaches "
                               f"a new shard yet. Check that it reads {cluster.applied_file} or "
                               f"http://{cluster.topology_listen()}/shards.json")
        step(f"aggregator {address} reads every shard")


def apply_file(cluster: LocalCluster, desired_file: Path) -> Plan:
    """Bring the running cluster to ``desired_file``; Refused (nothing changed) for an unsafe edit."""
    require_running(cluster)
    with cluster.admin_lock():
        return apply_locked(cluster, desired_file)


def apply_locked(cluster: LocalCluster, desired_file: Path) -> Plan:
    """``apply_file`` for a caller that holds the admin lock (add-shard, retire-shard)."""
    try:
        desired = load(desired_file)
    except ConfigError as exc:
        raise Refused(f"{exc}; nothing was changed") from None
    current = cluster.running_topology()
    record = IdentityRecord.read(cluster.identities_file)
    changes = plan(current, desired, frozenset(record.removed))
    if changes.changes_nothing:
        step(f"nothing to do: the cluster is as {desired_file} says")
        return changes
    for line in changes.summary():
        step(f"to apply: {line}")
    expected = check_parts(cluster, changes, record)
    save(desired, cluster.applied_file)
    step(f"{cluster.applied_file} written; waiting for every aggregator to read every shard")
    wait_aggregators(cluster, desired, expected)
    step("re-rendering nginx and reloading it: writes and reads now follow the file")
    reload_nginx(cluster, desired)
    record.shards.update(expected)
    for shard in changes.removed_shards:
        record.shards.pop(shard.name, None)
        record.removed.add(shard.name)
    record.write(cluster.identities_file)
    step(f"applied {desired_file}")
    return changes


def check_parts(cluster: LocalCluster, changes: Plan, record: IdentityRecord,
                aggregators: bool = True) -> dict[str, Identity]:
    """Steps 1 and 2 (new aggregators' readiness unless told not to); the identities checked, by shard name."""
    known = known_identities(cluster, changes.current, record)
    expected: dict[str, Identity] = {}
    for shard in changes.new_shards:
        expected[shard.name] = check_new_shard(cluster, shard, {**known, **expected})
    for shard in changes.moved_shards:
        expected[shard.name] = check_moved_shard(cluster, shard, known)
    for shard in changes.removed_shards:
        check_removed_shard(cluster, shard)
    for shard in changes.writers_to_check:
        for address in shard.writers:
            check_ready(f"shard {shard.name}: writer", address)
    for address in changes.new_aggregators if aggregators else ():
        check_ready("aggregator", address)
    return expected
