"""``python -m sharding entry``: the entry host of a cluster on several hosts, in the foreground.

On the entry host only nginx runs (with DATA_DIR: the shard file, the applied
topology, the passfile). Before nginx routes anything, every part the shard
file lists on other hosts is checked exactly as ``apply`` checks a new one:
each database reachable with the password, with the schema and an identity of
its own, each writer and aggregator ready, and every aggregator reading every
shard. Then nginx starts: the public port for clients, and the applied shard
file on the internal topology port (HOST:PORT+1) for the aggregators. At this
first start the aggregators can only read the shard file once nginx serves
it, so nginx starts before they are waited for: until they read every shard,
reads answer 503 (no write is lost: it is committed on its shard and read
once they are up). Ctrl-C or SIGTERM stops nginx. Later changes go through
``apply``, in the strict order.
"""

from __future__ import annotations

from sharding.apply import Identity, plan
from sharding.config import Topology, load, save
from sharding.local.apply import IdentityRecord, check_parts, wait_aggregators
from sharding.local.cluster import ClusterError, LocalCluster
from sharding.local.entry import step
from sharding.local.processes import stop, wait_ready
from sharding.local.signals import Shutdown, SignalQueue

# How often the foreground loop looks at its signal queue.
WAIT_PERIOD_S = 1.0


def serve_entry(cluster: LocalCluster) -> None:
    """Check every part of the shard file, start nginx, wait for Ctrl-C, stop nginx."""
    cluster.acquire_run_lock()
    signals = SignalQueue()
    signals.install()
    cluster.checkpoint = signals.check
    try:
        cluster.stop_leftovers()
        cluster.entry_marker.touch()  # from now on nginx, here and after each apply, serves the shard file
        topology, expected = bring_up(cluster)
        record = cluster.start_nginx(topology)
        wait_ready(record, "/healthz", timeout_s=cluster.settings.ready_timeout_s, checkpoint=signals.check)
        step("nginx serves the shard file; waiting for every aggregator to read every shard")
        wait_aggregators(cluster, topology, expected)
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


def bring_up(cluster: LocalCluster) -> tuple[Topology, dict[str, Identity]]:
    """The applied topology if there is one; else the shard file, checked part by part as apply checks."""
    if cluster.applied_file.exists():
        return cluster.running_topology(), {}
    if not cluster.shards_file.exists():
        raise ClusterError(f"no shard file at {cluster.shards_file}: write one (README, Running on several hosts)")
    desired = load(cluster.shards_file)
    record = IdentityRecord.read(cluster.identities_file)
    changes = plan(Topology(shards=()), desired, frozenset(record.removed))
    expected = check_parts(cluster, changes, record, aggregators=False)
    save(desired, cluster.applied_file)
    record.shards.update(expected)
    record.write(cluster.identities_file)
    return desired, expected
