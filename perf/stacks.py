"""The systems a bench run measures, each behind its own nginx rendered by sharding/nginx.py.

- the Reactions cluster (sharding/local/cluster.py), started for the run or already running;
- the ceiling: trivial aiohttp processes (perf/trivial.py) as writers and aggregators;
- the naive design: writers with ``REACTIONS_BATCHING=0`` on the cluster's shards.

Every process is started through sharding/local/processes.py and stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from sharding import nginx
from sharding.config import Shard, Topology, load
from sharding.local.cluster import REPO_ROOT, LocalCluster
from sharding.local.processes import ProcessRecord, free_port, port_is_free, spawn, stop, wait_ready
from sharding.local.settings import HOST, PORT_SPAN, ClusterSettings

# A shard of the ceiling stack needs a DSN to be a valid shard; nothing connects to it.
UNUSED_DSN = "postgresql://none@127.0.0.1:1/none"
# The naive writer gets a database connection per concurrent request, as it would in production.
NAIVE_POOL_SIZE = 64
# Bench clusters look for a free PORT from here, PORT_SPAN apart (away from make run's 8000).
BENCH_PORT_FIRST, BENCH_PORT_LAST = 20_000, 60_000


def free_cluster_port() -> int:
    """A PORT whose internal range (PORT..PORT+PORT_SPAN) looks unused."""
    for port in range(BENCH_PORT_FIRST, BENCH_PORT_LAST, PORT_SPAN):
        if all(port_is_free(p) for p in (port, port + 101, port + 201, port + 301)):
            return port
    raise RuntimeError("no free port range for a bench cluster")


@dataclass
class Stack:
    """One system under load: its URL and the pids whose CPU is accounted, by component."""

    name: str
    url: str
    components: dict[str, list[int]] = field(default_factory=dict)
    writers: list[str] = field(default_factory=list)  # writer addresses, for their batch metrics
    records: list[ProcessRecord] = field(default_factory=list)  # what we started, stopped in reverse
    access_log: Path | None = None  # nginx's, for the GET cache's hit ratio


def cluster_components(cluster: LocalCluster) -> dict[str, list[int]]:
    topology = load(cluster.shards_file)
    postmasters = [pid for s in topology.shards if (pid := cluster.postgres(s).pid()) is not None]
    return {
        "nginx": [r.pid for r in cluster.registry.all("nginx")],
        "writers": [r.pid for r in cluster.registry.all("writer")],
        "aggregators": [r.pid for r in cluster.registry.all("aggregator")],
        "postgres": postmasters,
    }


@contextlib.contextmanager
def local_cluster(work: Path, shards: int, aggregators: int, service_env: dict[str, str],
                  writer_sockets: bool = False) -> Iterator[tuple[LocalCluster, Stack]]:
    """A fresh cluster of its own (PostgreSQL per shard, writers, aggregators, nginx), stopped at the end."""
    settings = ClusterSettings(port=free_cluster_port(), shards=shards, aggregators=aggregators,
                               data_dir=work / "cluster", service_env=service_env, writer_sockets=writer_sockets)
    cluster = LocalCluster(settings)
    cluster.acquire_run_lock()  # creates DATA_DIR; `make run` on it would say it is taken
    try:
        cluster.start()
        yield cluster, cluster_stack(cluster, f"http://{HOST}:{settings.port}")
    finally:
        cluster.stop()
        cluster.release_run_lock()


def running_cluster(url: str, data_dir: Path) -> tuple[LocalCluster | None, Stack]:
    """A cluster someone else runs; its DATA_DIR (if readable) gives the shards and the pids."""
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    cluster = LocalCluster(ClusterSettings(port=port, data_dir=data_dir))
    if not cluster.shards_file.exists():
        return None, Stack("reactions", url)
    return cluster, cluster_stack(cluster, url)


def cluster_stack(cluster: LocalCluster, url: str) -> Stack:
    topology = load(cluster.shards_file)
    return Stack("reactions", url, cluster_components(cluster), [w for s in topology.active_shards for w in s.writers],
                 access_log=cluster.nginx_dir / "access.log")


def start_nginx(stack: Stack, topology: Topology, work: Path, get_cache: bool = True, writer_sockets: str = "") -> None:
    """nginx from the same template and layout as the cluster's, on a free port (GET cache on or off)."""
    directory = work / f"nginx-{stack.name}"
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "nginx.conf"
    layout = replace(nginx.NginxLayout.local(HOST, port, directory), get_cache=get_cache,
                     writer_sockets=writer_sockets)
    config.write_text(nginx.render(topology, layout))
    nginx.check(config, directory)
    argv = nginx.nginx_command(config, directory, "-g", "daemon off;")
    record = spawn(f"nginx-{stack.name}", "nginx", argv, port=port, log=directory / "nginx.out", env={},
                   cwd=directory)
    stack.records.append(record)
    wait_ready(record, "/healthz")
    stack.url = f"http://{HOST}:{port}"
    stack.components["nginx"] = [record.pid]
    stack.access_log = directory / "access.log"


def start_python(stack: Stack, name: str, argv: list[str], env: dict[str, str], work: Path) -> ProcessRecord:
    port = free_port()
    env = {**env, "REACTIONS_HOST": HOST, "REACTIONS_PORT": str(port), "PYTHONPATH": str(REPO_ROOT)}
    record = spawn(name, stack.name, [sys.executable, *argv], port=port, log=work / "logs" / f"{name}.log", env=env,
                   cwd=REPO_ROOT)
    stack.records.append(record)
    return record


@contextlib.contextmanager
def ceiling_stack(work: Path, writers: int, aggregators: int, writer_sockets: bool = False) -> Iterator[Stack]:
    """Trivial aiohttp processes as writers (POST -> 204) and aggregators (GET -> the 3-line body).

    Its nginx has the GET cache off: the baseline is what nginx and Python cost per request.
    ``writer_sockets``: nginx reaches the "writers" over Unix sockets (sharding/sockets.py).
    """
    stack = Stack("ceiling-unix" if writer_sockets else "ceiling", "")
    sockets = ""
    if writer_sockets:
        sockets = str(work / "ceiling-sockets")
        os.makedirs(sockets, mode=0o755, exist_ok=True)
    env = {"REACTIONS_WRITER_SOCKETS": sockets} if sockets else {}
    try:
        servers = [start_python(stack, f"{stack.name}-trivial-{i + 1}" if sockets else f"trivial-{i + 1}",
                                ["-m", "perf.trivial"], env, work)
                   for i in range(max(writers, aggregators))]
        for record in servers:
            wait_ready(record)
        stack.components["trivial"] = [r.pid for r in servers]
        shards = tuple(Shard(name=f"t{i}", writers=(r.address,), dsn=UNUSED_DSN) for i, r in
                       enumerate(servers[:writers]))
        start_nginx(stack, Topology(shards=shards, aggregators=tuple(r.address for r in servers[:aggregators])), work,
                    get_cache=False, writer_sockets=sockets)
        yield stack
    finally:
        stop_all(stack)


@contextlib.contextmanager
def naive_stack(work: Path, topology: Topology, postmasters: list[int],
                passfile: Path | None = None) -> Iterator[Stack]:
    """One batching-disabled writer per active shard, on that shard's database, behind its own nginx.

    ``passfile``: the cluster's PostgreSQL password file (PGPASSFILE names it, never the secret).
    """
    stack = Stack("naive", "")
    env = {"REACTIONS_BATCHING": "0", "REACTIONS_POOL_SIZE": str(NAIVE_POOL_SIZE)}
    if passfile is not None:
        env["PGPASSFILE"] = str(passfile)
    try:
        writers = [(shard, start_python(stack, f"naive-writer-{shard.name}", ["-m", "writer.main"],
                                        {**env, "REACTIONS_DSN": shard.dsn}, work))
                   for shard in topology.active_shards]
        for _, record in writers:
            wait_ready(record)
        stack.components["writers"] = [r.pid for _, r in writers]
        stack.writers = [r.address for _, r in writers]
        stack.components["postgres"] = postmasters
        shards = tuple(Shard(name=s.name, writers=(r.address,), dsn=s.dsn) for s, r in writers)
        start_nginx(stack, Topology(shards=shards, aggregators=topology.aggregators), work)
        yield stack
    finally:
        stop_all(stack)


def stop_all(stack: Stack) -> None:
    """nginx first, then the backends (writers drain), each by its recorded pid."""
    for record in sorted(reversed(stack.records), key=lambda r: r.role != "nginx"):
        stop(record)
