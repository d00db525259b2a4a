"""What the commands do: run in the foreground, add or retire a shard, show status.

``add-shard`` and ``retire-shard`` run in their own process beside ``run``:
they start (detached) and record what they add under DATA_DIR/run/, where
the running ``run`` supervises it and, at the end, stops it by pid.
"""

from __future__ import annotations

from sharding.config import RETIRED, Shard, Topology, save
from sharding.local.apply import IdentityRecord, apply_locked
from sharding.local.cluster import ClusterError, LocalCluster, port_of_dsn, shard_name
from sharding.local.entry import require_running, step
from sharding.local.processes import ProcessRecord, alive, become_subreaper, http_get, stop, wait_ready
from sharding.local.settings import AGGREGATOR_PORT_OFFSET
from sharding.local.signals import Shutdown, SignalQueue
from sharding.local.supervisor import restart_counts, supervise


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


def add_shard(cluster: LocalCluster) -> str:
    """The local case of ``apply``: start a shard's PostgreSQL and writer here, add it to the file, apply it.

    apply then checks the database and the writer, waits until every
    aggregator reads the shard, and only then reloads nginx: no write is ever unread.
    """
    require_running(cluster)
    with cluster.admin_lock():
        topology = cluster.running_topology()
        names = {s.name for s in topology.shards} | IdentityRecord.read(cluster.identities_file).removed
        index = next(i for i in range(len(names) + 1) if shard_name(i) not in names)
        shard = cluster.new_shard(index, cluster.used_ports(topology))
        start_shard_parts(cluster, shard)
        try:
            apply_edit(cluster, topology.with_shard(shard))
        except BaseException:
            stop_shard_parts(cluster, shard)
            raise
        step(f"shard {shard.name} added")
        return shard.name


def apply_edit(cluster: LocalCluster, edited: Topology) -> None:
    """Write ``edited`` into the shard file and apply it; on failure the file is as it was."""
    before = cluster.shards_file.read_text() if cluster.shards_file.exists() else None
    save(edited, cluster.shards_file)
    try:
        apply_locked(cluster, cluster.shards_file)
    except BaseException:
        if before is not None:
            cluster.shards_file.write_text(before)
        raise


def add_aggregator(cluster: LocalCluster) -> str:
    """Start one more aggregator; ``apply`` adds it to nginx once it reads every shard."""
    require_running(cluster)
    with cluster.admin_lock():
        topology = cluster.running_topology()
        slot = len(topology.aggregators) + 1
        address = f"{cluster.host}:{cluster.allocate_port(AGGREGATOR_PORT_OFFSET, slot, cluster.used_ports(topology))}"
        record = cluster.start_aggregator(len(topology.aggregators), address)
        step(f"{record.name}: starting on {address}; waiting until it has read every shard")
        try:
            wait_ready(record, timeout_s=cluster.settings.ready_timeout_s)
            apply_edit(cluster, topology.with_aggregators([*topology.aggregators, address]))
        except BaseException:
            stop(record)  # not in the shard file: run never restarts it, so nothing else would stop it
            cluster.registry.remove(record.name)
            raise
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
        stop_shard_parts(cluster, shard)
        raise


def stop_shard_parts(cluster: LocalCluster, shard: Shard) -> None:
    for record in cluster.registry.all("writer"):
        if record.shard == shard.name:
            stop(record)
            cluster.registry.remove(record.name)
    cluster.postgres(shard).stop()


def retire_shard(cluster: LocalCluster, name: str) -> None:
    """The local case of ``apply`` with the shard marked retired; then its writer here drains and stops."""
    require_running(cluster)
    with cluster.admin_lock():
        topology = cluster.running_topology()
        try:
            retired = topology.with_state(name, RETIRED)
        except KeyError:
            raise ClusterError(f"no shard named {name!r} in {cluster.applied_file}") from None
        step(f"shard {name}: re-rendering nginx without it and reloading")
        apply_edit(cluster, retired)
        for record in cluster.registry.all("writer"):
            if record.shard == name:
                step(f"shard {name}: stopping writer {record.name} (pid {record.pid}); it drains first")
                stop(record)
                cluster.registry.remove(record.name)
        step(f"shard {name} retired: it takes no writes and its data is still read")


def status(cluster: LocalCluster) -> str:
    """The topology, the health of every part and how often ``run`` restarted it."""
    if not cluster.shards_file.exists():
        return f"no cluster in DATA_DIR={cluster.root}"
    topology = cluster.running_topology()
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


# A writer's /readyz says this when its clock is off by more than the skew margin (writer/settle.py).
CLOCK_OFF = "OFF by more than the"


def health(record: ProcessRecord) -> str:
    """ready, or what its probe answered; a writer whose clock is off stays ready and says so."""
    path = "/healthz" if record.role == "nginx" else "/readyz"
    if not alive(record):
        return "not running"
    code, _, body = http_get(f"http://{record.address}{path}")
    if code != 200:
        return f"{path} -> {code or 'no answer'}"
    return "ready, skewed" if CLOCK_OFF in body else "ready"


def part_line(name: str, state: str, pid: int | None, address: str, health: str,
              restarts: dict[str, dict[str, object]]) -> str:
    """One row of ``status``; a restarted part also says how it last ended and when it came back."""
    line = f"{name:<16}{state:<9}{pid or '-':>8}  {address:<22}{health:<16}"
    restarted = restarts.get(name)
    if not restarted:
        return line + "0"
    return line + f"{restarted['restarts']} (last at {restarted['last_restart']}; it {restarted['last_exit']})"
