"""A private Docker engine for tests: Debian's dockerd with everything of its own.

Each engine takes a free slot (a lock file): the slot gives it a bridge
(``rxdockN``), an address block of its own inside 198.19.0.0/16 (network
namespace tests keep to 198.18.0.0/16), a data root that persists between
runs on this machine (images and build layers are a cache: nothing depends on
it) and an exec root, pidfile and socket in /run. It never touches
/var/run/docker.sock or another engine's rules.

Stopped by its PID. What dockerd changed on the host and leaves behind is
undone only where it is still what dockerd set: the FORWARD policy, the
bridge netfilter sysctls and IP forwarding (these two only when no other
dockerd runs), the rules that name its own bridges or addresses, and its
bridges. Used as ``with DockerEngine.start(DockerEngineSettings.from_env()) as engine``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

SLOTS = 16
NETWORK = ipaddress.ip_network("198.19.0.0/16")
BRIDGE_NF = ("/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables")
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


class EngineUnavailable(RuntimeError):
    """No engine can start here (not root, no dockerd, no bridges): tests skip with this reason."""


@dataclass(frozen=True)
class DockerEngineSettings:
    cache_root: Path  # data roots, one per slot, kept between runs
    run_root: Path  # exec roots, sockets, pidfiles, lock files
    start_timeout_s: float
    stop_timeout_s: float

    @classmethod
    def from_env(cls) -> DockerEngineSettings:
        env = os.environ
        return cls(cache_root=Path(env.get("REACTIONS_TEST_DOCKER_CACHE", "/var/lib/reactions-test-docker")),
                   run_root=Path(env.get("REACTIONS_TEST_DOCKER_RUN", "/run/reactions-test-docker")),
                   start_timeout_s=float(env.get("REACTIONS_TEST_DOCKER_START_S", "60")),
                   stop_timeout_s=float(env.get("REACTIONS_TEST_DOCKER_STOP_S", "40")))


@dataclass(frozen=True)
class Slot:
    """One engine's share of 198.19.0.0/16: a /20, whose first /24 is its default bridge."""

    number: int

    @property
    def block(self) -> ipaddress.IPv4Network:
        return list(NETWORK.subnets(new_prefix=20))[self.number]  # type: ignore[return-value]

    @property
    def bridge(self) -> str:
        return f"rxdock{self.number}"

    @property
    def bridge_cidr(self) -> str:
        return f"{self.block.network_address + 1}/24"

    @property
    def pool(self) -> str:
        """Networks the engine makes by itself: the upper half of the block, /24 each."""
        return f"base={list(self.block.subnets(new_prefix=21))[1]},size=24"

    def fixed_net(self, index: int) -> str:
        """A /24 for a compose network with fixed addresses (REACTIONS_NET), outside the pool: 1..7."""
        assert 1 <= index <= 7
        return ".".join(str(self.block.network_address + 256 * index).split(".")[:3])


@dataclass
class HostState:
    """What dockerd may change on the host, read before it starts."""

    forward_policy: str | None
    bridge_nf: dict[str, str]
    ip_forward: str
    docker_chains: set[str]

    @classmethod
    def read(cls) -> HostState:
        return cls(forward_policy(), {p: read(p) for p in BRIDGE_NF if Path(p).exists()}, read(IP_FORWARD),
                   docker_chains())


def read(path: str) -> str:
    return Path(path).read_text().strip()


def forward_policy() -> str | None:
    result = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True)
    first = result.stdout.splitlines()[:1]
    return first[0].split()[-1] if result.returncode == 0 and first and first[0].startswith("-P ") else None


def docker_chains() -> set[str]:
    """Docker's own chains, as ``table:chain``."""
    found = set()
    for table in ("filter", "nat"):
        listed = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        found |= {f"{table}:{line.split()[1]}" for line in listed.splitlines()
                  if line.startswith("-N DOCKER")}
    return found


def remove_chains(chains: set[str]) -> None:
    """Docker's chains that this engine made (none existed before it): the jumps to them, then the chains."""
    for table in ("filter", "nat"):
        names = {c.split(":")[1] for c in chains if c.startswith(f"{table}:")}
        listed = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        for rule in listed.splitlines():
            words = rule.split()
            if words[:1] == ["-A"] and (words[1] in names or ("-j" in words and words[words.index("-j") + 1] in names)):
                subprocess.run(["iptables", "-t", table, "-D", *words[1:]], capture_output=True)
        for name in names:
            subprocess.run(["iptables", "-t", table, "-X", name], capture_output=True)


def other_dockerd_runs(mine: int) -> bool:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != mine:
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == "dockerd":
                    return True
    return False


def why_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a private Docker engine needs root"
    for tool in ("dockerd", "docker", "iptables", "ip"):
        if shutil.which(tool) is None:
            return f"no {tool} here (scripts/docker-deps.sh installs Debian's docker.io)"
    return None


@dataclass
class DockerEngine:
    settings: DockerEngineSettings
    slot: Slot
    lock: IO[str]
    before: HostState
    process: subprocess.Popen[bytes] | None = None
    bridges: set[str] = field(default_factory=set)

    @property
    def exec_root(self) -> Path:
        return self.settings.run_root / f"slot{self.slot.number}"

    @property
    def socket(self) -> Path:
        return self.exec_root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def data_root(self) -> Path:
        return self.settings.cache_root / f"slot{self.slot.number}"

    def env(self) -> dict[str, str]:
        """The environment for docker and compose commands against this engine."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def docker(self, *args: str, timeout_s: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], env=self.env(), capture_output=True, text=True, timeout=timeout_s,
                              check=check)

    @classmethod
    @contextlib.contextmanager
    def start(cls, settings: DockerEngineSettings) -> Iterator[DockerEngine]:
        reason = why_unavailable()
        if reason:
            raise EngineUnavailable(reason)
        settings.run_root.mkdir(parents=True, exist_ok=True)
        slot, lock = take_slot(settings.run_root)
        engine = cls(settings, slot, lock, HostState.read())
        try:
            engine._launch()
            yield engine
        finally:
            engine.stop()
            lock.close()

    def _launch(self) -> None:
        subprocess.run(["ip", "link", "add", self.slot.bridge, "type", "bridge"], check=True, capture_output=True)
        self.bridges.add(self.slot.bridge)
        subprocess.run(["ip", "addr", "add", self.slot.bridge_cidr, "dev", self.slot.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.slot.bridge, "up"], check=True)
        self.exec_root.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        with (self.exec_root / "dockerd.log").open("wb") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                ["dockerd", "--data-root", str(self.data_root), "--exec-root", str(self.exec_root / "exec"),
                 "--pidfile", str(self.exec_root / "dockerd.pid"), "--host", self.host, "--bridge", self.slot.bridge,
                 "--default-address-pool", self.slot.pool, "--shutdown-timeout", "5", "--log-level", "warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.settings.start_timeout_s
        while self.docker("version", check=False, timeout_s=10).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.exec_root / "dockerd.log").read_text(errors="replace")[-2000:]
                raise EngineUnavailable(f"dockerd did not start: {tail.strip().splitlines()[-1:]}")
            time.sleep(0.2)
        self.forget_earlier_runs()

    def forget_earlier_runs(self) -> None:
        """Containers, networks and volumes an interrupted run left in this data root; its images stay (a cache)."""
        left = self.docker("ps", "-aq").stdout.split()
        if left:
            self.docker("rm", "-f", "-v", *left)
        self.docker("network", "prune", "-f")
        self.docker("volume", "prune", "-f")

    def networks(self) -> list[tuple[str, str]]:
        """(bridge name, subnet) of each of this engine's bridge networks."""
        found = []
        ids = self.docker("network", "ls", "-q", "--filter", "driver=bridge", check=False).stdout.split()
        for net in ids:
            out = self.docker("network", "inspect", "-f", '{{.Id}}|{{index .Options "com.docker.network.bridge.name"}}|'
                              "{{range .IPAM.Config}}{{.Subnet}} {{end}}", net, check=False).stdout.strip()
            if out.count("|") == 2:
                full_id, name, subnets = out.split("|")
                found += [(name or f"br-{full_id[:12]}", s) for s in subnets.split()]
        return found

    def stop(self) -> None:
        """Stop dockerd by its PID, then undo what it changed that is still as it set it."""
        subnets = {str(self.slot.block)}
        if self.process is not None and self.process.poll() is None:
            for bridge, subnet in self.networks():
                self.bridges.add(bridge)
                subnets.add(subnet)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=self.settings.stop_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        pid = self.process.pid if self.process is not None else -1
        self.bridges |= bridges_in(self.slot.block)  # a network whose removal dockerd did not finish
        remove_rules(self.bridges, subnets)
        for bridge in self.bridges:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        self.restore(pid)

    def restore(self, pid: int) -> None:
        if self.before.forward_policy and forward_policy() == "DROP" != self.before.forward_policy:
            subprocess.run(["iptables", "-P", "FORWARD", self.before.forward_policy], check=False)
        if other_dockerd_runs(pid):
            return  # another engine may need forwarding, bridge netfilter and Docker's chains
        remove_chains(docker_chains() - self.before.docker_chains)
        for path, value in self.before.bridge_nf.items():
            if Path(path).exists() and read(path) == "1" != value:
                Path(path).write_text(value)
        if read(IP_FORWARD) == "1" != self.before.ip_forward:
            Path(IP_FORWARD).write_text(self.before.ip_forward)


def take_slot(run_root: Path) -> tuple[Slot, IO[str]]:
    """The first free slot whose addresses nobody else uses; what an interrupted run of it left is removed."""
    for number in range(SLOTS):
        lock = (run_root / f"slot{number}.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        slot = Slot(number)
        users = interfaces_in(slot.block)
        if any(not leftover(slot, name, up) for name, up in users.items()):
            lock.close()  # another engine or test network uses these addresses
            continue
        for name in users:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        return slot, lock
    raise EngineUnavailable(f"all {SLOTS} private Docker engine slots are taken")


def leftover(slot: Slot, name: str, up: bool) -> bool:
    """An interface an interrupted run of this slot left: its own bridge, or a network bridge with nothing on it."""
    return name == slot.bridge or (name.startswith("br-") and not up)


def interfaces_in(block: ipaddress.IPv4Network) -> dict[str, bool]:
    """Interfaces with an address in the block, and whether each has carrier (something attached)."""
    listed = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    found = {}
    for line in listed.splitlines():
        words = line.split()
        if len(words) > 3 and ipaddress.ip_interface(words[3]).ip in block:
            link = subprocess.run(["ip", "-o", "link", "show", words[1]], capture_output=True, text=True).stdout
            found[words[1]] = "NO-CARRIER" not in link
    return found


def bridges_in(block: ipaddress.IPv4Network) -> set[str]:
    """Bridges with an address in this engine's block: its own, whoever's run left them."""
    listed = subprocess.run(["ip", "-4", "-o", "addr", "show", "type", "bridge"], capture_output=True, text=True)
    found = set()
    for line in listed.stdout.splitlines():
        words = line.split()
        if len(words) > 3 and ipaddress.ip_interface(words[3]).ip in block:
            found.add(words[1])
    return found


def remove_rules(interfaces: set[str], subnets: set[str]) -> None:
    """Delete the iptables rules that name this engine's bridges or addresses, and nothing else."""
    for table in ("filter", "nat"):
        listed = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
        for rule in listed.splitlines():
            words = rule.split()
            if words[:1] != ["-A"]:
                continue
            if any(w in interfaces for w in words) or any(mine(w, subnets) for w in words):
                subprocess.run(["iptables", "-t", table, "-D", *words[1:]], capture_output=True)


def mine(word: str, subnets: set[str]) -> bool:
    try:
        net = ipaddress.ip_network(word, strict=False)
    except ValueError:
        return False
    return any(net.version == 4 and net.subnet_of(ipaddress.ip_network(s)) for s in subnets)  # type: ignore[arg-type]
