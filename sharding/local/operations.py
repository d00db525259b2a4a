"""What the commands do: run in the foreground, add or retire a shard, show status.

``add-shard`` and ``retire-shard`` run in their own process beside ``run``:
they start (detached) and record what they add under DATA_DIR/run/, where
the running ``run`` supervises it and, at the end, stops it by pid.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from sharding import nginx
from sharding.config import RETIRED, Shard, Topology, load, save
from sharding.local.cluster import ClusterError, LocalCluster, port_of_dsn, shard_name
from sharding.local.processes import ProcessRecord, alive, become_subreaper, http_get, stop, wait_for, wait_ready
from sharding.local.settings import AGGREGATOR_PORT_OFFSET
from sharding.local.signals import Shutdown, SignalQueue
from sharding.local.supervisor import restart_counts, supervise

# How long add-shard waits for every aggregator to read a new shard.
AGGREGATOR_PICKUP_TIMEOUT_S = 30.0
# How long a reload may take (old nginx workers finish their requests).
RELOAD_TIMEOUT_S = 30.0


def run(cluster: LocalCluster) -> None:
    """Start everything, restart what crashes until Ctrl-C or SIGTERM, then stop everything in order.

    The signals are queued, not raised: start and supervise read the queue
    at points where stopping leaves every started process recorded.
    """
    cluster.acquire_run_lock()
    signals = SignalQueue()
    signals.install()
    cluster.checkpoint = signals.check
    become_subreaper()
    try:
        cluster.start()
        print(cluster.describe())
        print(f"\nReactions is up on http://{cluster.host}:{cluster.settings.port} (data in {cluster.root}). "
              "Ctrl-C stops it.", flush=True)
        supervise(cluster, signals)
    except Shutdown as exc:
        print(f"\n{exc}: stopping (nginx, writers, aggregators, PostgreSQL) ...", flush=True)
    finally:
        signals.ignore()
        cluster.stop()
        cluster.release_run_lock()
        print("stopped.", flush=True)


def require_running(cluster: LocalCluster) -> None:
    if cluster.running_pid() is None:
        raise ClusterError(f"no cluster is running from DATA_DIR={cluster.root} (PORT={cluster.settings.port}); "
                           "start one with `make run` and use the same PORT and DATA_DIR")


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def add_shard(cluster: LocalCluster) -> str:
    """PostgreSQL, writer, aggregators read it, then nginx routes to it: no write is ever unread."""
    require_running(cluster)
    with cluster.admin_lock():
        topology = load(cluster.shards_file)
        names = {s.name for s in topology.shards}
        index = next(i for i in range(len(names) + 1) if shard_name(i) not in names)
        shard = cluster.new_shard(index, cluster.used_ports(topology))
        start_shard_parts(cluster, shard)
        save(topology.with_shard(shard), cluster.shards_file)
        step(f"shard {shard.name}: in {cluster.shards_file}; waiting for every aggregator to read it")
        wait_aggregators_read(cluster, shard.name)
        step("re-rendering nginx and reloading it: writes now reach the new shard")
        reload_nginx(cluster)
        step(f"shard {shard.name} added")
        return shard.name


def add_aggregator(cluster: LocalCluster) -> str:
    """Start one more aggregator; once it reads every shard, nginx sends it reads too."""
    require_running(cluster)
    with cluster.admin_lock():
        topology = load(cluster.shards_file)
        slot = len(topology.aggregators) + 1
        address = f"{cluster.host}:{cluster.allocate_port(AGGREGATOR_PORT_OFFSET, slot, cluster.used_ports(topology))}"
        record = cluster.start_aggregator(len(topology.aggregators), address)
        step(f"{record.name}: starting on {address}; waiting until it has read every shard")
        try:
            wait_ready(record, timeout_s=cluster.settings.ready_timeout_s)
        except BaseException:
            stop(record)  # not in the shard file: run never restarts it, so nothing else would stop it
            cluster.registry.remove(record.name)
            raise
        grown = topology.with_aggregators([*topology.aggregators, address])
        step("re-rendering nginx and reloading it: reads now reach the new aggregator")
        reload_nginx(cluster, grown)
        save(grown, cluster.shards_file)
        step(f"{record.name} added")
        return record.name


def start_shard_parts(cluster: LocalCluster, shard: Shard) -> None:
    """The new shard's PostgreSQL and writer; if either fails, stop both (nothing is left behind)."""
    step(f"shard {shard.name}: starting PostgreSQL on port {port_of_dsn(shard.dsn)}")
    try:
        cluster.start_postgres(shard)
        step(f"shard {shard.name}: starting its writer on {shard.writers[0]}")
        for record in cluster.start_writers(shard):
            wait_ready(record, timeout_s=cluster.settings.ready_timeout_s)
    except BaseException:
        for record in cluster.registry.all("writer"):
            if record.shard == shard.name:
                stop(record)
                cluster.registry.remove(record.name)
        cluster.postgres(shard).stop()
        raise


def retire_shard(cluster: LocalCluster, name: str) -> None:
    """nginx stops routing to it, then its writer drains and stops; its data stays read."""
    require_running(cluster)
    with cluster.admin_lock():
        topology = load(cluster.shards_file)
        try:
            retired = topology.with_state(name, RETIRED)
        except KeyError:
            raise ClusterError(f"no shard named {name!r} in {cluster.shards_file}") from None
        step(f"shard {name}: re-rendering nginx without it and reloading")
        reload_nginx(cluster, retired)
        save(retired, cluster.shards_file)
        for record in cluster.registry.all("writer"):
            if record.shard == name:
                step(f"shard {name}: stopping writer {record.name} (pid {record.pid}); it drains first")
                stop(record)
                cluster.registry.remove(record.name)
        step(f"shard {name} retired: it takes no writes and its data is still read")


def aggregator_reads(record: ProcessRecord, shard: str) -> bool:
    """Whether an aggregator reads ``shard``: listed by its GET /shards with an answer from its database."""
    status, _, text = http_get(f"http://{record.address}/shards")
    if status != 200:
        return False
    try:
        listed = {s["name"]: s for s in json.loads(text)["shards"]}
    except (ValueError, KeyError, TypeError):
        return False
    return shard in listed and bool(listed[shard].get("healthy")) and listed[shard].get("identity") is not None


def wait_aggregators_read(cluster: LocalCluster, shard: str) -> None:
    records = cluster.registry.all("aggregator")
    for record in records:
        if alive(record):
            os.kill(record.pid, signal.SIGHUP)  # re-read the shard file now
    for record in records:
        if not wait_for(lambda: aggregator_reads(record, shard), AGGREGATOR_PICKUP_TIMEOUT_S):  # noqa: B023
            raise ClusterError(f"{record.name} at {record.address} does not read shard {shard!r} after "
                               f"{AGGREGATOR_PICKUP_TIMEOUT_S:.0f}s; nginx was NOT reloaded, so no write "
                               f"reaches the shard yet. See {record.log}")


def reload_nginx(cluster: LocalCluster, topology: Topology | None = None) -> None:
    """Render, test and reload; return once every worker of the old configuration has exited.

    Until then an old worker may still route a request on a connection it
    already had, by the old ring.
    """
    record = cluster.registry.get("nginx")
    if record is None or not alive(record):
        raise ClusterError("nginx of this cluster is not running")
    topology = topology if topology is not None else load(cluster.shards_file)
    generation = cluster.write_nginx_conf(topology)
    cluster.write_prometheus_conf(topology)
    old = workers(record.pid)
    nginx.reload(cluster.nginx_conf, cluster.nginx_dir)
    url = f"http://{cluster.host}:{cluster.settings.port}/healthz"
    served = wait_for(lambda: http_get(url)[1].get("X-Reactions-Generation") == generation, RELOAD_TIMEOUT_S)
    if not served or not wait_for(lambda: not set(workers(record.pid)) & set(old), RELOAD_TIMEOUT_S):
        raise ClusterError(f"nginx did not finish reloading in {RELOAD_TIMEOUT_S:.0f}s; see {cluster.nginx_dir}")


def workers(master_pid: int) -> list[int]:
    """The live child processes of nginx's master (its workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == master_pid and fields[0] not in ("Z", "X"):
            found.append(int(proc.name))
    return found


def status(cluster: LocalCluster) -> str:
    """The topology, the health of every part and how often ``run`` restarted it."""
    if not cluster.shards_file.exists():
        return f"no cluster in DATA_DIR={cluster.root}"
    topology = load(cluster.shards_file)
    run_pid = cluster.running_pid()
    restarts = restart_counts(cluster.root)
    lines = [f"cluster {cluster.root}: " + (f"running (run pid {run_pid})" if run_pid else "not running"),
             f"{'part':<16}{'state':<9}{'pid':>8}  {'address':<22}{'health':<16}restarts"]
    records = {r.name: r for r in cluster.registry.all()}
    for shard in topology.shards:
        pg, name = cluster.postgres(shard), f"postgres-{shard.name}"
        pid = pg.pid()
        lines.append(part_line(name, shard.state, pid, f"{cluster.host}:{pg.port}", "up" if pid else "down", restarts))
        for record in (r for r in records.values() if r.shard == shard.name):
            lines.append(part_line(record.name, shard.state, record.pid, record.address, health(record), restarts))
    for record in records.values():
        if record.role in ("aggregator", "nginx"):
            lines.append(part_line(record.name, "", record.pid, record.address, health(record), restarts))
    return "\n".join(lines)


def health(record: ProcessRecord) -> str:
    path = "/healthz" if record.role == "nginx" else "/readyz"
    code = http_get(f"http://{record.address}{path}")[0] if alive(record) else None
    return "not running" if code is None else ("ready" if code == 200 else f"{path} -> {code or 'no answer'}")


def part_line(name: str, state: str, pid: int | None, address: str, health: str,
              restarts: dict[str, dict[str, object]]) -> str:
    """One row of ``status``; a restarted part also says how it last ended and when it came back."""
    line = f"{name:<16}{state:<9}{pid or '-':>8}  {address:<22}{health:<16}"
    restarted = restarts.get(name)
    if not restarted:
        return line + "0"
    return line + f"{restarted['restarts']} (last at {restarted['last_restart']}; it {restarted['last_exit']})"
