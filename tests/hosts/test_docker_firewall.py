"""The test hosts talk to each other while the root namespace's firewall is as a Docker engine leaves it.

dockerd sets the root namespace's FORWARD policy to DROP and has bridged
frames go through iptables (tests/support/firewall.py). The test network's
bridge lives in a namespace of its own (tests/support/netns.py), so hosts
still reach each other, and the root namespace still reaches them. A bridge
in the root namespace, as the network had before, loses the same exchange:
that proves the state really drops forwarded frames here.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator

from tests.support.firewall import (
    BRIDGE_NF_CALL_IPTABLES,
    DROP,
    docker_forward_state,
    forward_drop_state,
    forward_policy,
    iptables,
    policy_lock,
    require_firewall,
)
from tests.support.netns import SUBNET_PREFIX, Host, HostNetwork, free_subnet, ip, require_netns

ECHO_PORT = 7007
# One exchange on a healthy link takes milliseconds; a dropped SYN never answers.
EXCHANGE_TIMEOUT_S = 3.0
# Answers one connection with what it sent, once it printed that it listens.
ECHO_SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
conn, _ = server.accept()
conn.settimeout(5)
conn.sendall(conn.recv(64))
"""
ECHO_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as conn:
    conn.sendall(b"ping")
    sys.exit(0 if conn.recv(64) == b"ping" else 1)
"""


@contextlib.contextmanager
def echo_server(host: Host) -> Iterator[None]:
    """One echo server inside ``host``, stopped by pid on the way out."""
    argv = host.command([sys.executable, "-c", ECHO_SERVER, host.address, str(ECHO_PORT)])
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
            yield
        finally:
            proc.kill()


def exchange_from(client: Host, server: Host) -> bool:
    """Whether ``client`` gets its bytes echoed by ``server`` within the bound."""
    argv = [sys.executable, "-c", ECHO_CLIENT, server.address, str(ECHO_PORT), str(EXCHANGE_TIMEOUT_S)]
    with echo_server(server):
        done = subprocess.run(client.command(argv), capture_output=True, timeout=EXCHANGE_TIMEOUT_S * 3)
    return done.returncode == 0


def exchange_from_root(server: Host) -> bool:
    with echo_server(server), socket.create_connection((server.address, ECHO_PORT), EXCHANGE_TIMEOUT_S) as conn:
        conn.sendall(b"ping")
        return conn.recv(64) == b"ping"


@contextlib.contextmanager
def hosts_on_a_root_bridge() -> Iterator[tuple[Host, Host]]:
    """Two namespaces on a bridge in the root namespace (which holds no address); all removed on the way out."""
    tag = secrets.token_hex(4)
    bridge, subnet = f"rxrb{tag}", free_subnet(random.Random())
    hosts = [Host(f"reactions-rootbr-{tag}-h{n}", str(subnet[n + 1]), f"rxrv{tag}{n}", bridge) for n in (1, 2)]
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("link", "set", bridge, "up")
        for host in hosts:
            ip("netns", "add", host.namespace)
            ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
            ip("link", "set", host.veth, "master", bridge)
            ip("link", "set", host.veth, "up")
            ip("addr", "add", f"{host.address}/{SUBNET_PREFIX}", "dev", "eth0", namespace=host.namespace)
            ip("link", "set", "eth0", "up", namespace=host.namespace)
        yield hosts[0], hosts[1]
    finally:
        for argv in [*(["link", "del", h.veth] for h in hosts), *(["netns", "del", h.namespace] for h in hosts),
                     ["link", "del", bridge]]:
            subprocess.run(["ip", *argv], capture_output=True, check=False)


def test_hosts_reach_each_other_while_the_root_namespace_drops_forwarded_frames() -> None:
    require_netns()
    require_firewall()
    policy_before = forward_policy()
    with HostNetwork() as network:
        db, client = network.add_host(), network.add_host()
        with docker_forward_state():
            assert forward_policy() == DROP and BRIDGE_NF_CALL_IPTABLES.read_text().strip() == "1"
            assert exchange_from(client, db), "host to host, through the network's own bridge"
            assert exchange_from_root(db), "the root namespace to a host, through its uplink"
            with hosts_on_a_root_bridge() as (old_db, old_client):
                assert not exchange_from(old_client, old_db), "a bridge in the root namespace is filtered"
    assert forward_policy() == policy_before, "the policy is as it was"
    assert not network.leftovers()


def test_a_drop_policy_found_in_place_is_left_in_place() -> None:
    """As when an engine already runs: the state changes nothing, so undoes nothing."""
    require_firewall()
    with policy_lock():
        before = forward_policy()
        iptables("-P", "FORWARD", DROP)
        try:
            with forward_drop_state():
                assert forward_policy() == DROP
            assert forward_policy() == DROP
        finally:
            iptables("-P", "FORWARD", before)
