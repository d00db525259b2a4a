"""The entry host's side of a topology change: nginx reloaded and waited for, the steps printed.

Used by ``apply`` (sharding/local/apply.py) and by the local commands
(sharding/local/operations.py), on whichever host nginx and DATA_DIR are.
"""

from __future__ import annotations

import time

from sharding import nginx
from sharding.config import Topology
from sharding.local.cluster import ClusterError, LocalCluster
from sharding.local.processes import alive, http_get, process_stats, wait_for

# How long a reload may take (old nginx workers finish their requests).
RELOAD_TIMEOUT_S = 30.0


def require_running(cluster: LocalCluster) -> None:
    if cluster.running_pid() is None:
        raise ClusterError(f"no cluster is running from DATA_DIR={cluster.root} (PORT={cluster.settings.port}); "
                           "start one with `make run` (or `python -m sharding entry` on an entry host) "
                           "and use the same PORT, HOST and DATA_DIR")


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def reload_nginx(cluster: LocalCluster, topology: Topology | None = None) -> None:
    """Render, test and reload; return once every worker of the old configuration has exited.

    Until then an old worker may still route a request on a connection it
    already had, by the old ring.
    """
    record = cluster.registry.get("nginx")
    if record is None or not alive(record):
        raise ClusterError("nginx of this cluster is not running")
    topology = topology if topology is not None else cluster.running_topology()
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
    return [pid for pid, fields in process_stats() if int(fields[1]) == master_pid and fields[0] not in ("Z", "X")]
