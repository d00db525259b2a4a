"""Real hosts on this machine: network namespaces on a private bridge, which a test can cut off silently.

A ``HostNetwork`` is one Linux bridge in a network namespace of its own (the
network's "switch"), so that frames between hosts are bridged there and
never pass the root namespace's firewall: a Docker engine sets the root's
FORWARD policy to DROP and has bridged frames go through iptables
(br_netfilter, ``net.bridge.bridge-nf-call-iptables=1``), which would drop
them on a bridge in the root namespace. The root namespace joins the
network by a veth pair of its own (its ``uplink``), which holds the ``.1``
address of a /24 of 198.18.0.0/16, the first half of RFC 2544's
benchmarking range (never routed anywhere; test Docker engines keep to the
other half, 198.19.0.0/16). What the root sends and receives there is its
own traffic (OUTPUT and INPUT), never forwarded. Each ``Host`` is a
namespace joined to the bridge by a veth pair, with its own ``.N`` address
and ``lo`` up. A namespace has no default route, so what runs in it reaches
only the network, and every host's address is checked to be routed via our
uplink before it is handed out: no packet of these tests leaves the machine.

Several test runs may share the machine: names carry a random tag of the
run, and each network takes a /24 of the range that nothing here uses yet
(not always 198.18.0.0/24, which another run may hold).

    with HostNetwork() as network:
        db = network.add_host()
        subprocess.run(db.command(["ip", "addr"]))
        db.partition()   # every packet to or from it vanishes
        db.heal()
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from types import TracebackType

import pytest

# RFC 2544's benchmarking range: reserved, never routed on the internet.
BENCHMARK_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
# Its first half is for these test hosts; the second (198.19.0.0/16) is the
# address pool of the tests' Docker engines, so that the two never overlap.
HOSTS_RANGE = ipaddress.IPv4Network("198.18.0.0/16")
SUBNET_PREFIX = 24
# A /24 holds 253 hosts after the network, bridge (.1) and broadcast addresses.
MAX_HOSTS = 253
# Attempts at a /24 nobody else holds (another run may take one at the same moment).
SUBNET_ATTEMPTS = 20
# Linux's limit on interface names (IFNAMSIZ - 1).
MAX_IFNAME = 15
# The bridge's name inside the network's own namespace (nothing else is there).
BRIDGE = "br0"
# The nftables table a partition adds inside a host's namespace.
PARTITION_TABLE = "reactions_partition"
# Drop everything but the namespace's own loopback, before any other hook
# (priority -300 runs ahead of conntrack). ARP is not dropped on purpose: a
# failed ARP lookup would answer the peer "no route to host", which is not silent.
PARTITION_RULES = f"""
table inet {PARTITION_TABLE} {{
    chain input {{ type filter hook input priority -300; policy drop; iifname "lo" accept; }}
    chain output {{ type filter hook output priority -300; policy drop; oifname "lo" accept; }}
}}
"""


class NetworkError(RuntimeError):
    """A namespace, link or rule could not be made, checked or removed."""


def ip(*args: str, namespace: str | None = None) -> str:
    """Run ``ip`` (in ``namespace`` with ``-n``); its stdout, or NetworkError with its stderr."""
    argv = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def route_device(address: str) -> str | None:
    """The device the root namespace would send ``address`` through, or None if it has no route."""
    try:
        routes = json.loads(ip("-j", "route", "get", address))
    except NetworkError:
        return None
    return routes[0].get("dev") if routes else None


def networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network of an address or a route in the root namespace."""
    used = [ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
            for link in json.loads(ip("-j", "-4", "addr", "show")) for a in link.get("addr_info", [])]
    for route in json.loads(ip("-j", "-4", "route", "show", "table", "all")):
        dst = route.get("dst", "")
        if dst and dst != "default":
            used.append(ipaddress.ip_network(dst, strict=False))
    return [n for n in used if isinstance(n, ipaddress.IPv4Network)]


def free_subnet(rng: random.Random) -> ipaddress.IPv4Network:
    """A /24 of the benchmarking range that overlaps nothing in the root namespace."""
    used = networks_in_use()
    candidates = [s for s in HOSTS_RANGE.subnets(new_prefix=SUBNET_PREFIX)
                  if not any(s.overlaps(u) for u in used)]
    if not candidates:
        raise NetworkError(f"every /{SUBNET_PREFIX} of {HOSTS_RANGE} is in use")
    return rng.choice(candidates)


@functools.cache
def netns_unavailable() -> str | None:
    """Why network namespaces cannot be made here (one line), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "no ip command: install iproute2 (scripts/system-deps.sh)"
    probe = f"rx-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        ip("netns", "add", probe)
    except NetworkError as exc:
        return f"cannot create a network namespace: {exc}"
    ip("netns", "del", probe)
    return None


def require_netns() -> None:
    """Skip the calling test, with one line, where network namespaces cannot be made."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)


class Host:
    """One network namespace on the bridge, with its own address; ``command`` runs argv inside it."""

    def __init__(self, namespace: str, address: str, veth: str, uplink: str) -> None:
        self.namespace = namespace
        self.address = address
        self.veth = veth  # the bridge's end of its link (in the network's namespace)
        self.uplink = uplink  # the root namespace's link to the network
        self.partitioned = False

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` to run inside this host (as root: ``ip netns exec`` needs it)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def check_route(self) -> None:
        """The root namespace reaches this host via our uplink, and only so: else NetworkError."""
        device = route_device(self.address)
        if device != self.uplink:
            raise NetworkError(f"{self.address} is routed via {device}, not via our uplink {self.uplink}")

    def partition(self) -> None:
        """Drop every packet to and from this host, silently (no RST, no ICMP), until ``heal``."""
        if self.partitioned:
            return
        done = subprocess.run(self.command(["nft", "-f", "-"]), input=PARTITION_RULES, capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise NetworkError(f"nft in {self.namespace}: {done.stderr.strip()} (scripts/system-deps.sh installs nft)")
        self.partitioned = True

    def heal(self) -> None:
        """Let this host's packets through again (connections that outlived the partition retransmit)."""
        if not self.partitioned:
            return
        done = subprocess.run(self.command(["nft", "delete", "table", "inet", PARTITION_TABLE]),
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NetworkError(f"nft in {self.namespace}: {done.stderr.strip()}")
        self.partitioned = False

    def __repr__(self) -> str:
        return f"Host({self.namespace}, {self.address})"


@contextlib.contextmanager
def partitioned(host: Host) -> Iterator[Host]:
    """``host`` cut off inside the block, healed on the way out whatever happened."""
    host.partition()
    try:
        yield host
    finally:
        host.heal()


class HostNetwork:
    """A bridge in a namespace of its own and the hosts on it; as a context manager, removes all it made."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.tag = secrets.token_hex(4)  # 8 hex digits: interface names stay within 15 characters
        self.namespace = f"reactions-{os.getpid()}-{self.tag}-net"  # the bridge's
        self.uplink = f"rxup{self.tag}"
        self.hosts: list[Host] = []
        self.subnet: ipaddress.IPv4Network | None = None
        self._rng = rng or random.Random()
        self._made_namespace = False

    @property
    def gateway(self) -> str:
        """The root namespace's address on the network (clients in the root namespace come from it)."""
        return str(self._subnet()[1])

    def _subnet(self) -> ipaddress.IPv4Network:
        if self.subnet is None:
            raise NetworkError("the network is not up: use it as a context manager (or call up())")
        return self.subnet

    def up(self) -> HostNetwork:
        """Make the bridge and the uplink, on a /24 nobody here uses (retrying if another run took it meanwhile)."""
        ip("netns", "add", self.namespace)
        self._made_namespace = True
        ip("link", "add", BRIDGE, "type", "bridge", namespace=self.namespace)
        ip("link", "set", BRIDGE, "up", namespace=self.namespace)
        peer = f"rxpu{self.tag}"
        ip("link", "add", self.uplink, "type", "veth", "peer", "name", peer, "netns", self.namespace)
        ip("link", "set", self.uplink, "up")
        self._attach(peer)
        for _ in range(SUBNET_ATTEMPTS):
            subnet = free_subnet(self._rng)
            ip("addr", "add", f"{subnet[1]}/{SUBNET_PREFIX}", "dev", self.uplink)
            if route_device(str(subnet[2])) == self.uplink:
                self.subnet = subnet
                return self
            ip("addr", "del", f"{subnet[1]}/{SUBNET_PREFIX}", "dev", self.uplink)  # someone else's: pick again
        raise NetworkError(f"no /{SUBNET_PREFIX} of {HOSTS_RANGE} routed via {self.uplink}")

    def _attach(self, port: str) -> None:
        """Put ``port`` (a veth end in the network's namespace) on the bridge, up."""
        ip("link", "set", port, "master", BRIDGE, namespace=self.namespace)
        ip("link", "set", port, "up", namespace=self.namespace)

    def add_host(self) -> Host:
        """A new namespace on the bridge with the next address, its route checked before it is returned."""
        subnet = self._subnet()
        n = len(self.hosts) + 1
        if n > MAX_HOSTS - 1:
            raise NetworkError(f"at most {MAX_HOSTS - 1} hosts on one network")
        host = Host(f"reactions-{os.getpid()}-{self.tag}-h{n}", str(subnet[n + 1]), f"rxv{self.tag}{n}",
                    self.uplink)
        ip("netns", "add", host.namespace)
        self.hosts.append(host)  # from here on, close() removes it
        assert len(host.veth) <= MAX_IFNAME
        ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.namespace,
           namespace=self.namespace)
        self._attach(host.veth)
        ip("addr", "add", f"{host.address}/{SUBNET_PREFIX}", "dev", "eth0", namespace=host.namespace)
        ip("link", "set", "eth0", "up", namespace=host.namespace)
        ip("link", "set", "lo", "up", namespace=host.namespace)
        host.check_route()
        return host

    def close(self) -> None:
        """Remove every namespace and veth this network made; NetworkError if one remains.

        Links are deleted before their namespaces: a namespace's own links
        go only once the kernel has finished destroying it, after ``ip`` returned.
        """
        problems = []
        for host in self.hosts:
            left = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True,
                                  check=False).stdout.split()
            if left:
                problems.append(f"processes still in {host.namespace}: {' '.join(left)} (stop them first)")
        for argv, namespace in [*((["link", "del", h.veth], self.namespace) for h in self.hosts),
                                *((["netns", "del", h.namespace], None) for h in self.hosts),
                                (["link", "del", self.uplink], None),
                                *([(["netns", "del", self.namespace], None)] if self._made_namespace else [])]:
            try:
                ip(*argv, namespace=namespace)
            except NetworkError as exc:
                if not any(gone in str(exc) for gone in ("Cannot find", "No such file", "Cannot open")):
                    problems.append(str(exc))
        problems += [f"left behind: {name}" for name in self.leftovers()]
        self.hosts, self._made_namespace = [], False
        if problems:
            raise NetworkError("; ".join(problems))

    def leftovers(self) -> list[str]:
        """Namespaces of this network, and links of the root namespace, that exist now (none after ``close``)."""
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                    check=False).stdout.split()
        links = [link["ifname"] for link in json.loads(ip("-j", "link", "show"))]
        return [name for name in [*namespaces, *links] if self.tag in name]

    def __enter__(self) -> HostNetwork:
        try:
            return self.up()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
