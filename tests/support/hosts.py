"""Reactions on several hosts, built on this machine: one network namespace per host.

An entry host runs ``python -m sharding entry`` (nginx, the shard file, and
``apply``); two aggregator hosts run an aggregator that follows the shard file
by URL from the entry host's topology port; each shard host runs its
PostgreSQL (scram, the session's passfile) and its writer. Every part binds
its host's address only, and they reach each other by the addresses in the
shard file. Processes are started with the commands a user would type on each
host, stopped by pid, and whatever is left in a namespace at the end is
killed by pid before the namespaces go (tests/support/netns.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sharding.config import Shard, Topology, load, save
from sharding.local.postgres import LocalPostgres
from sharding.local.processes import http_get, wait_for
from tests.support.netns import Host, HostNetwork
from tests.support.passwords import session_passfile
from tests.support.postmaster import postgres_in
from tests.support.tmpdirs import world_traversable_tmpdir

REPO_ROOT = Path(__file__).resolve().parents[2]
# Each host has a network stack of its own, so every part keeps its usual port.
ENTRY_PORT = 8000
WRITER_PORT = 8101
AGGREGATOR_PORT = 8201
PG_PORT = 5432
# Starting a part on a loaded two-core machine (PostgreSQL's initdb included).
START_DEADLINE_S = 60.0
# A process asked to stop (SIGTERM) that is still there after this is killed.
STOP_DEADLINE_S = 20.0
# The aggregators refresh (and poll the shard file) this often in tests.
SERVICE_ENV = {"REACTIONS_REFRESH_INTERVAL_MS": "50"}


@dataclass
class Part:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class ShardHost:
    name: str
    host: Host
    postgres: LocalPostgres

    @property
    def dsn(self) -> str:
        return self.postgres.dsn

    @property
    def writer(self) -> str:
        return f"{self.host.address}:{WRITER_PORT}"

    def shard(self) -> Shard:
        return Shard(name=self.name, writers=(self.writer,), dsn=self.dsn)


@dataclass
class Hosts:
    network: HostNetwork
    root: Path
    entry: Host
    aggregator_hosts: list[Host]
    shard_hosts: dict[str, ShardHost] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "entry"

    @property
    def base(self) -> str:
        return f"http://{self.entry.address}:{ENTRY_PORT}"

    @property
    def aggregators(self) -> list[str]:
        return [f"{h.address}:{AGGREGATOR_PORT}" for h in self.aggregator_hosts]

    def entry_env(self) -> dict[str, str]:
        return {"HOST": self.entry.address, "PORT": str(ENTRY_PORT), "DATA_DIR": str(self.data_dir),
                "PASSFILE": str(session_passfile())}

    def spawn(self, name: str, host: Host, argv: list[str], env: dict[str, str]) -> Part:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(host.command(argv), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=REPO_ROOT, start_new_session=True,
                                    env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env})
        part = Part(name, proc, log)
        self.parts.append(part)
        return part

    def wait_ready(self, part: Part, url: str) -> None:
        if not wait_for(lambda: part.proc.poll() is not None or http_get(url)[0] == 200, START_DEADLINE_S) \
                or part.proc.poll() is not None:
            raise AssertionError(f"{part.name} not ready at {url}:\n{part.log.read_text()[-3000:]}")

    def add_shard_host(self, name: str) -> ShardHost:
        """A new host with the shard's PostgreSQL (scram) and its writer, ready; not in the shard file yet."""
        shard = self.new_shard_host(name)
        shard.postgres.start()
        self.wait_ready(self.start_writer(shard), f"http://{shard.writer}/readyz")
        return shard

    def new_shard_host(self, name: str) -> ShardHost:
        """A new host for a shard, with its PostgreSQL made but not started, and no writer yet."""
        host = self.network.add_host()
        shard = ShardHost(name, host, postgres_in(host, self.root / "pg" / name, PG_PORT))
        self.shard_hosts[name] = shard
        return shard

    def start_writer(self, shard: ShardHost) -> Part:
        """The shard's writer on its host, as a user starts it (not waited for)."""
        return self.spawn(f"writer-{shard.name}", shard.host, [sys.executable, "-m", "writer.main"],
                          {"REACTIONS_HOST": shard.host.address, "REACTIONS_PORT": str(WRITER_PORT),
                           "REACTIONS_DSN": shard.dsn, "PGPASSFILE": str(session_passfile())})

    def start_aggregators(self) -> list[Part]:
        return [self.start_aggregator(f"aggregator-{i + 1}", host) for i, host in enumerate(self.aggregator_hosts)]

    def start_aggregator(self, name: str, host: Host) -> Part:
        """An aggregator on ``host`` that follows the shard file by URL from the entry host."""
        url = f"http://{self.entry.address}:{ENTRY_PORT + 1}/shards.json"
        return self.spawn(name, host, [sys.executable, "-m", "aggregator.main"],
                          {**SERVICE_ENV, "REACTIONS_HOST": host.address, "REACTIONS_PORT": str(AGGREGATOR_PORT),
                           "REACTIONS_SHARDS_URL": url, "PGPASSFILE": str(session_passfile())})

    def start_entry(self, wait: bool = True) -> Part:
        """``python -m sharding entry`` on the entry host; with ``wait``, until nginx answers."""
        part = self.spawn("entry", self.entry, [sys.executable, "-m", "sharding", "entry"], self.entry_env())
        if wait:
            self.wait_ready(part, f"{self.base}/healthz")
        return part

    def topology(self) -> Topology:
        return load(self.data_dir / "applied.json")

    def edit(self, topology: Topology) -> None:
        """What a user does with an editor: the entry host's shard file says the new topology."""
        save(topology, self.data_dir / "shards.json")

    def apply(self) -> subprocess.CompletedProcess[str]:
        """``python -m sharding apply`` on the entry host."""
        return subprocess.run(self.entry.command([sys.executable, "-m", "sharding", "apply"]), cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **self.entry_env()},
                              capture_output=True, text=True, timeout=120)

    def stop(self) -> None:
        """Every process by pid (the entry first: it stops its nginx), then each PostgreSQL, then leftovers."""
        for part in reversed(self.parts):  # the entry (and its nginx) before what it routes to
            stop_process(part.proc)
        for shard in self.shard_hosts.values():
            shard.host.heal()
            shard.postgres.stop("immediate")
        for host in self.network.hosts:
            kill_leftovers(host)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_leftovers(host: Host) -> None:
    """Whatever still runs in one of our namespaces (a stuck child) is killed, by pid."""
    pids = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True,
                          check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + STOP_DEADLINE_S
    while time.monotonic() < deadline and subprocess.run(["ip", "netns", "pids", host.namespace],
                                                         capture_output=True, text=True).stdout.split():
        time.sleep(0.05)


@contextlib.contextmanager
def several_hosts(shards: tuple[str, ...] = ("a", "b", "c"), aggregators: int = 2) -> Iterator[Hosts]:
    """An entry host, aggregator hosts and shard hosts, started; everything gone at the end, even on failure."""
    with HostNetwork() as network:
        root = world_traversable_tmpdir("reactions-hosts-")
        hosts = Hosts(network, root, network.add_host(), [network.add_host() for _ in range(aggregators)])
        try:
            for name in shards:
                hosts.add_shard_host(name)
            hosts.data_dir.mkdir(parents=True)
            save(Topology(shards=tuple(s.shard() for s in hosts.shard_hosts.values()),
                          aggregators=tuple(hosts.aggregators)), hosts.data_dir / "shards.json")
            aggregators = hosts.start_aggregators()
            entry = hosts.start_entry()
            for part, address in zip(aggregators, hosts.aggregators, strict=True):
                hosts.wait_ready(part, f"http://{address}/readyz")
            if not wait_for(lambda: "Reactions is up" in entry.log.read_text(), START_DEADLINE_S):
                raise AssertionError(f"the entry host did not come up:\n{entry.log.read_text()[-3000:]}")
            yield hosts
        finally:
            hosts.stop()


def listening(host: Host) -> set[str]:
    """The local addresses of every TCP socket listening in ``host``."""
    out = subprocess.run(host.command(["ss", "-Hltn"]), capture_output=True, text=True, check=True).stdout
    return {line.split()[3].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def shards_json(hosts: Hosts, address: str) -> dict[str, dict[str, object]]:
    status, _, text = http_get(f"http://{address}/shards")
    assert status == 200, f"{address}/shards answered {status}"
    return {s["name"]: s for s in json.loads(text)["shards"]}
