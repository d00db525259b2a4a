"""The local cluster: PostgreSQL per shard, writers, aggregators and nginx on one address (HOST, 127.0.0.1).

Its ports are PORT plus an offset and a slot (settings.py); its files and
locks are DATA_DIR's (data_dir.py); each process is recorded as it starts
(processes.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from sharding import nginx, prometheus
from sharding.config import Shard, Topology
from sharding.local.data_dir import ClusterError, DataDir
from sharding.local.postgres import LocalPostgres
from sharding.local.processes import ProcessRecord, alive, port_is_free, spawn, stop, wait_ready
from sharding.local.settings import (
    AGGREGATOR_PORT_OFFSET,
    MAX_SLOTS,
    POSTGRES_PORT_OFFSET,
    TOPOLOGY_PORT_OFFSET,
    WRITER_PORT_OFFSET,
    ClusterSettings,
)
from sharding.local.signals import deferred_signals
from sharding.local.static import served_dashboard
from sharding.sockets import socket_path

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_FILE = REPO_ROOT / "monitoring" / "rules.yml"
# Writers drain their open batch on SIGTERM; give them this long.
WRITER_STOP_TIMEOUT_S = 35.0


def shard_name(index: int) -> str:
    """a, b, ... z, then s26, s27, ..."""
    return string.ascii_lowercase[index] if index < 26 else f"s{index}"


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


class LocalCluster(DataDir):
    def __init__(self, settings: ClusterSettings) -> None:
        super().__init__(settings.root)
        self.settings = settings
        self.host = settings.host
        self.passfile = settings.pgpass
        # Called between the steps of ``start`` (and while waiting); ``run`` makes it raise on Ctrl-C.
        self.checkpoint: Callable[[], None] = lambda: None

    # -- ports ---------------------------------------------------------------

    def topology_listen(self) -> str:
        """Where nginx serves the applied shard file to aggregators on other hosts: HOST, PORT + 1."""
        return f"{self.host}:{self.settings.port + TOPOLOGY_PORT_OFFSET}"

    @property
    def sockets_dir(self) -> Path:
        return self.root / "sockets"

    def writer_sockets(self) -> str:
        """The writers' Unix socket directory if ``run`` chose sockets (WRITER_SOCKETS=1), else "".

        The directory's presence is the choice, so that ``add-shard``, ``apply``
        and the supervisor's restarts follow the running cluster (a writer on
        TCP only behind nginx's sockets, or a batch ring of other names than
        nginx's, would be wrong). An entry host's writers are on other hosts: never.
        """
        return str(self.sockets_dir) if self.sockets_dir.is_dir() and not self.serves_topology() else ""

    def choose_writer_sockets(self) -> None:
        """At ``run``'s start (nothing of this cluster runs): the directory made or removed as WRITER_SOCKETS says."""
        if self.settings.writer_sockets:
            try:
                socket_path(str(self.sockets_dir), f"{self.host}:65535")
            except ValueError as exc:
                raise ClusterError(f"WRITER_SOCKETS=1 needs a shorter DATA_DIR: {exc}") from None
            self.sockets_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.sockets_dir, 0o755)  # nginx's workers may run as another user
        else:
            shutil.rmtree(self.sockets_dir, ignore_errors=True)

    def postgres(self, shard: Shard) -> LocalPostgres:
        return LocalPostgres(self.root / "pg" / shard.name, port_of_dsn(shard.dsn), listen_address=self.host,
                             passfile=self.passfile)

    def used_ports(self, topology: Topology | None) -> set[int]:
        if topology is None:
            return set()
        ports = {port_of(a) for s in topology.shards for a in s.writers} | {port_of(a) for a in topology.aggregators}
        return ports | {port_of_dsn(s.dsn) for s in topology.shards}

    def allocate_port(self, offset: int, preferred_slot: int, used: set[int]) -> int:
        """PORT+offset+slot, starting at the preferred slot, skipping taken ports."""
        for slot in [preferred_slot, *range(1, MAX_SLOTS + 1)]:
            port = self.settings.port + offset + slot
            if port not in used and port_is_free(port, self.host):
                used.add(port)
                return port
        first = self.settings.port + offset
        raise ClusterError(f"no free port in {first + 1}..{first + MAX_SLOTS}")

    def new_shard(self, index: int, used: set[int]) -> Shard:
        name = shard_name(index)
        writer = self.allocate_port(WRITER_PORT_OFFSET, index + 1, used)
        pg = LocalPostgres(self.root / "pg" / name, self.allocate_port(POSTGRES_PORT_OFFSET, index + 1, used),
                           listen_address=self.host, passfile=self.passfile)
        return Shard(name=name, writers=(f"{self.host}:{writer}",), dsn=pg.dsn)

    def initial_topology(self) -> Topology:
        """The shard file if there is one (data persists); else SHARDS new shards."""
        existing = self.running_topology() if self.shards_file.exists() else None
        used = self.used_ports(existing)
        if existing is None:
            shards = [self.new_shard(i, used) for i in range(self.settings.shards)]
            topology = Topology(shards=tuple(shards))
        else:
            topology = existing
            if len(existing.shards) != self.settings.shards:
                print(f"note: {self.shards_file} already has {len(existing.shards)} shards; "
                      f"SHARDS={self.settings.shards} applies to a new DATA_DIR only")
        aggregators = list(topology.aggregators[: self.settings.aggregators])
        while len(aggregators) < self.settings.aggregators:
            port = self.allocate_port(AGGREGATOR_PORT_OFFSET, len(aggregators) + 1, used)
            aggregators.append(f"{self.host}:{port}")
        return topology.with_aggregators(aggregators) if topology.shards else topology

    # -- starting parts ------------------------------------------------------

    def service_env(self, port: int) -> dict[str, str]:
        # PGPASSFILE names the file, never the secret: a process list shows only the path.
        return {**self.settings.service_env, "REACTIONS_HOST": self.host, "REACTIONS_PORT": str(port),
                "PGPASSFILE": str(self.passfile),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}

    def start_postgres(self, shard: Shard) -> LocalPostgres:
        pg = self.postgres(shard)
        if pg.pid() is None:
            pg.start()
        return pg

    def launch(self, name: str, role: str, argv: Sequence[str], *, port: int, log: Path, env: dict[str, str],
               cwd: Path, shard: str | None = None) -> ProcessRecord:
        """Start a process and record it, with no signal in between (an unrecorded process is an orphan)."""
        with deferred_signals():
            record = spawn(name, role, argv, port=port, log=log, env=env, cwd=cwd, shard=shard, host=self.host)
            self.registry.add(record)
        return record

    def start_writer(self, shard: Shard, index: int) -> ProcessRecord:
        """The shard's ``index``-th writer (its address in the shard file)."""
        address = shard.writers[index]
        name = f"writer-{shard.name}" + (f"-{index}" if index else "")
        # The applied shard file: a writer places a batch's events as nginx would (docs/contract.md, Batches).
        env = {**self.service_env(port_of(address)), "REACTIONS_DSN": shard.dsn,
               "REACTIONS_SHARDS_FILE": str(self.applied_file)}
        if sockets := self.writer_sockets():
            env["REACTIONS_WRITER_SOCKETS"] = sockets
        return self.launch(name, "writer", self.settings.writer_argv, port=port_of(address),
                           log=self.root / "logs" / f"{name}.log", env=env, cwd=REPO_ROOT, shard=shard.name)

    def start_writers(self, shard: Shard) -> list[ProcessRecord]:
        return [self.start_writer(shard, k) for k in range(len(shard.writers))]

    def start_aggregator(self, index: int, address: str) -> ProcessRecord:
        name = f"aggregator-{index + 1}"
        env = {**self.service_env(port_of(address)), "REACTIONS_SHARDS_FILE": str(self.applied_file)}
        return self.launch(name, "aggregator", self.settings.aggregator_argv, port=port_of(address),
                           log=self.root / "logs" / f"{name}.log", env=env, cwd=REPO_ROOT)

    def write_nginx_conf(self, topology: Topology) -> str:
        """Render, write and ``nginx -t`` the configuration; return its generation."""
        self.nginx_dir.mkdir(parents=True, exist_ok=True)
        served = self.topology_listen() if self.serves_topology() else ""
        layout = nginx.NginxLayout.local(self.host, self.settings.port, self.nginx_dir,
                                         served_dashboard(self.nginx_dir), topology_listen=served,
                                         topology_file=str(self.applied_file))
        layout = replace(layout, writer_sockets=self.writer_sockets())
        text = nginx.render(topology, layout, str(self.applied_file))
        tmp = self.nginx_dir / "nginx.conf.new"
        tmp.write_text(text)
        nginx.check(tmp, self.nginx_dir)
        os.replace(tmp, self.nginx_conf)
        return nginx.generation_of(text)

    def write_prometheus_conf(self, topology: Topology) -> None:
        """Keep DATA_DIR/prometheus.yml scraping exactly this topology (``make monitor`` runs Prometheus on it)."""
        layout = prometheus.ScrapeLayout(rules_file=str(RULES_FILE))
        tmp = self.prometheus_conf.with_suffix(".yml.new")
        tmp.write_text(prometheus.render(topology, layout, str(self.shards_file)))
        os.replace(tmp, self.prometheus_conf)

    def start_nginx(self, topology: Topology) -> ProcessRecord:
        self.write_nginx_conf(topology)
        nginx.remove_stale_socket(self.nginx_dir)
        argv = nginx.nginx_command(self.nginx_conf, self.nginx_dir, "-g", "daemon off;")
        return self.launch("nginx", "nginx", argv, port=self.settings.port, log=self.nginx_dir / "nginx.out", env={},
                           cwd=self.nginx_dir)

    def start(self) -> Topology:
        """Start every part in dependency order and wait until each is ready (``run``)."""
        self.stop_leftovers()
        if not port_is_free(self.settings.port, self.host):
            raise ClusterError(f"port {self.settings.port} is in use: set PORT to a free port")
        topology = self.initial_topology()
        self.choose_writer_sockets()
        self.save_started(topology)
        self.write_prometheus_conf(topology)
        for shard in topology.shards:
            self.checkpoint()
            self.start_postgres(shard)
        records = []
        for shard in topology.active_shards:
            self.checkpoint()
            records += self.start_writers(shard)
        for i, address in enumerate(topology.aggregators):
            self.checkpoint()
            records.append(self.start_aggregator(i, address))
        for record in records:
            wait_ready(record, timeout_s=self.settings.ready_timeout_s, checkpoint=self.checkpoint)
        self.checkpoint()
        wait_ready(self.start_nginx(topology), "/healthz", timeout_s=self.settings.ready_timeout_s,
                   checkpoint=self.checkpoint)
        return topology

    # -- stopping ------------------------------------------------------------

    def stop_leftovers(self) -> None:
        """Processes recorded by a ``run`` that died without cleaning up: stop them by pid."""
        leftovers = [r for r in self.registry.all() if alive(r)]
        if leftovers:
            print(f"stopping {len(leftovers)} process(es) left by an earlier run: "
                  + ", ".join(f"{r.name} (pid {r.pid})" for r in leftovers))
        self.stop_processes()

    def stop_processes(self) -> None:
        """nginx first (no new requests), then writers (they drain), then aggregators."""
        for role, sig, timeout in (("nginx", signal.SIGQUIT, 30.0), ("writer", signal.SIGTERM, WRITER_STOP_TIMEOUT_S),
                                   ("aggregator", signal.SIGTERM, 15.0)):
            for record in self.registry.all(role):
                if not stop(record, sig, timeout):
                    print(f"{record.name} (pid {record.pid}) did not stop in {timeout:.0f}s and was killed",
                          file=sys.stderr)
                self.registry.remove(record.name)

    def stop(self) -> None:
        """Stop everything: processes in order, then every shard's PostgreSQL."""
        self.stop_processes()
        if self.shards_file.exists():
            for shard in self.running_topology().shards:
                self.postgres(shard).stop()

    def describe(self) -> str:
        """Which process is where."""
        lines = [f"{'part':<16}{'pid':>8}  {'address':<22}log"]
        for record in self.registry.all():
            lines.append(f"{record.name:<16}{record.pid:>8}  {record.address:<22}{record.log}")
        if self.shards_file.exists():
            for shard in self.running_topology().shards:
                pg = self.postgres(shard)
                lines.append(f"{'postgres-' + shard.name:<16}{pg.pid() or '-':>8}  {self.host + ':' + str(pg.port):<22}"
                             f"{pg.log_file}")
        return "\n".join(lines)


def port_of_dsn(dsn: str) -> int:
    """The port of a postgresql://user@host:port/db DSN."""
    host_part = dsn.split("@", 1)[-1].split("/", 1)[0]
    if ":" not in host_part:
        return 5432
    return int(host_part.rsplit(":", 1)[1])

