"""``python -m sharding entry``: the entry host of a cluster on several hosts, in the foreground.

On the entry host only nginx runs (with DATA_DIR: the shard file, the applied
topology, the passfile). Before nginx routes anything, every part the shard
file lists on other hosts is checked as ``apply`` checks a new one: each
database reachable with the password, with the schema and an identity of its
own, each writer ready. Parts start in any order (an engine starts them all
at once), so where ``apply`` refuses a part that is not there yet, the entry
host waits for it without end, each try bounded, and prints what it waits for
(a database that two shards name is still refused). Then nginx starts: the
public port for clients, and the applied shard file on the internal topology
port (HOST:PORT+1) for the aggregators. At this first start the aggregators
can only read the shard file once nginx serves it, so nginx starts before
they are waited for: until they read every shard, reads answer 503 (no write
is lost: it is committed on its shard and read once they are up). Ctrl-C or
SIGTERM stops nginx. Later changes go through ``apply``, in the strict order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from common.retry import Backoff, Waiting
from sharding.apply import Identity, Plan, Refused, plan, same_database_refusal
from sharding.config import Shard, Topology, load, redact_password, save
from sharding.local.apply import IdentityRecord, aggregator_reads, database_facts
from sharding.local.cluster import ClusterError, LocalCluster
from sharding.local.entry import step
from sharding.local.processes import http_get, stop, wait_ready
from sharding.local.signals import Shutdown, SignalQueue

T = TypeVar("T")

# How often the foreground loop looks at its signal queue.
WAIT_PERIOD_S = 1.0
# Waiting for a part at the first start: the longest pause between two tries
# (each try is bounded by its own check: DATABASE_CHECK_TIMEOUT_S, PROBE_TIMEOUT_S).
WAIT_BACKOFF_MAX_S = 5.0
# How much of a part's /readyz answer the wait prints.
REASON_CHARS = 300


class NotYet(Exception):
    """A part the entry host waits for is not there yet; the message says what was found."""


def serve_entry(cluster: LocalCluster) -> None:
    """Check every part of the shard file, start nginx, wait for Ctrl-C, stop nginx."""
    cluster.acquire_run_lock()
    signals = SignalQueue()
    signals.install()
    cluster.checkpoint = signals.check
    try:
        cluster.stop_leftovers()
        cluster.entry_marker.touch()  # from now on nginx, here and after each apply, serves the shard file
        topology, expected = bring_up(cluster, signals)
        record = cluster.start_nginx(topology)
        wait_ready(record, "/healthz", timeout_s=cluster.settings.ready_timeout_s, checkpoint=signals.check)
        step("nginx serves the shard file; waiting for every aggregator to read every shard")
        for address in topology.aggregators:
            until_there(signals, f"aggregator {address} to read every shard",
                        lambda a=address: aggregator_reading(a, topology.shards, expected))  # type: ignore[misc]
            step(f"aggregator {address} reads every shard")
        step(f"Reactions is up on http://{cluster.host}:{cluster.settings.port}; the shard file for aggregators "
             f"on http://{cluster.topology_listen()}/shards.json. Ctrl-C stops nginx.")
        while True:
            signals.check()
            signals.wait(WAIT_PERIOD_S)
    except Shutdown as exc:
        print(f"\n{exc}: stopping nginx ...", flush=True)
    finally:
        signals.ignore()
        nginx = cluster.registry.get("nginx")
        if nginx is not None:
            stop(nginx)
            cluster.registry.remove("nginx")
        cluster.release_run_lock()
        print("stopped.", flush=True)


def bring_up(cluster: LocalCluster, signals: SignalQueue) -> tuple[Topology, dict[str, Identity]]:
    """The applied topology if there is one; else the shard file, its parts waited for and checked."""
    if cluster.applied_file.exists():
        return cluster.running_topology(), {}
    if not cluster.shards_file.exists():
        raise ClusterError(f"no shard file at {cluster.shards_file}: "
                           "write one (docs/operations.md, Running on several hosts)")
    desired = load(cluster.shards_file)
    record = IdentityRecord.read(cluster.identities_file)
    changes = plan(Topology(shards=()), desired, frozenset(record.removed))
    expected = wait_for_parts(cluster, changes, record, signals)
    save(desired, cluster.applied_file)
    record.shards.update(expected)
    record.write(cluster.identities_file)
    return desired, expected


def wait_for_parts(cluster: LocalCluster, changes: Plan, record: IdentityRecord,
                   signals: SignalQueue) -> dict[str, Identity]:
    """``apply``'s checks of new shards and their writers, waiting for what is not there yet."""
    expected: dict[str, Identity] = {}
    for shard in changes.new_shards:
        identity = until_there(signals, f"shard {shard.name}: its database {redact_password(shard.dsn)}",
                               lambda s=shard: schema_identity(cluster, s))  # type: ignore[misc]
        refusal = same_database_refusal(shard, identity, {**record.shards, **expected})
        if refusal is not None:
            raise refusal
        step(f"shard {shard.name}: reachable, schema present, a database of its own "
             f"(system_identifier {identity[0]}, shard_uuid {identity[1]})")
        expected[shard.name] = identity
    for shard in changes.writers_to_check:
        for address in shard.writers:
            until_there(signals, f"shard {shard.name}: writer {address}",
                        lambda a=address: writer_ready(a))  # type: ignore[misc]
            step(f"shard {shard.name}: writer {address} is ready")
    return expected


def until_there(signals: SignalQueue, what: str, attempt: Callable[[], T]) -> T:
    """``attempt()`` until it does not raise NotYet, printing what is waited for; Ctrl-C ends the wait."""
    waiting, backoff = Waiting(what, report=step), Backoff(WAIT_BACKOFF_MAX_S)
    while True:
        signals.check()
        try:
            result = attempt()
        except NotYet as exc:
            waiting.failed(str(exc))
            signals.wait(backoff.delay(waiting.tries))
            continue
        waiting.succeeded()
        return result


def schema_identity(cluster: LocalCluster, shard: Shard) -> Identity:
    """One bounded try: the database's identity, or NotYet (unreachable, or no schema until a writer makes it)."""
    try:
        facts = database_facts(shard, cluster.passfile)
    except Refused as exc:
        raise NotYet(str(exc).removeprefix(f"shard {shard.name}: ")) from None
    if facts.identity is None:
        raise NotYet("reachable, but it has no Reactions schema yet (its writers make it)")
    return facts.identity


def writer_ready(address: str) -> None:
    """One bounded probe of the writer's /readyz; NotYet with what it answered."""
    status, _, text = http_get(f"http://{address}/readyz")
    if status == 0:
        raise NotYet("no answer (not started, or its port is closed while it waits for its database)")
    if status != 200:
        raise NotYet(f"/readyz answered {status}: {text.strip()[:REASON_CHARS]}")


def aggregator_reading(address: str, shards: tuple[Shard, ...], expected: dict[str, Identity]) -> None:
    """One bounded look at what the aggregator reads; NotYet with its /readyz answer."""
    if aggregator_reads(address, shards, expected):
        return
    status, _, text = http_get(f"http://{address}/readyz")
    raise NotYet(f"/readyz answered {status}: {text.strip()[:REASON_CHARS]}" if status else "no answer")
