"""The gray-failure tools themselves: a delaying, cuttable relay, hosts that vanish, a frozen PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import asyncpg
import pytest

from sharding.local.postgres import LocalPostgres
from tests.support.freeze import frozen, is_stopped
from tests.support.netns import BENCHMARK_RANGE, Host, HostNetwork, partitioned, require_netns, route_device
from tests.support.relay import REPO_ROOT, Relay
from tests.waiting import wait_until

# One-way delay the relay adds in the delay test: large against scheduling noise.
DELAY_MS = 100
# What a round trip through the relay may take beyond twice the delay (a loaded 2-core machine).
MARGIN_S = 0.15
ROUND_TRIPS = 5
# The client-side timeout the gray-failure tests use: a silent peer must make it expire.
CLIENT_TIMEOUT_S = 1.0
# An expired timeout ends at its deadline, give or take the event loop's tick.
TIMER_SLACK_S = 0.05


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(4096):
            writer.write(chunk)
            await writer.drain()
        writer.close()
    except ConnectionError:
        writer.transport.abort()  # the relay's cut reaches this side too


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield "127.0.0.1", server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> float:
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(len(payload)), 5.0) == payload
    return time.monotonic() - started


# -- the relay -----------------------------------------------------------------


async def test_the_relay_adds_its_delay_each_way_and_keeps_the_bytes_in_order(echo_server: tuple[str, int]) -> None:
    with await asyncio.to_thread(Relay(echo_server, delay_ms=DELAY_MS).start) as relay:
        assert relay.address is not None
        reader, writer = await asyncio.open_connection(*relay.address)
        try:
            times = [await round_trip(reader, writer, f"ping {n} ".encode() * 100) for n in range(ROUND_TRIPS)]
            burst = b"".join(f"{n:06d}".encode() for n in range(20_000))  # many chunks each way
            writer.write(burst)
            assert await asyncio.wait_for(reader.readexactly(len(burst)), 10.0) == burst
        finally:
            writer.close()
    rtt = 2 * DELAY_MS / 1000
    assert min(times) >= rtt, f"round trips {times}: faster than twice the delay"
    assert max(times) <= rtt + MARGIN_S, f"round trips {times}: slower than twice the delay plus {MARGIN_S}s"


async def test_a_cut_resets_the_clients_connection_and_the_relay_keeps_accepting(
        echo_server: tuple[str, int]) -> None:
    with await asyncio.to_thread(Relay(echo_server).start) as relay:
        assert relay.address is not None
        reader, writer = await asyncio.open_connection(*relay.address)
        await round_trip(reader, writer, b"before the cut")
        assert await asyncio.to_thread(relay.cut) == 1
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 5.0)
        writer.close()
        reader, writer = await asyncio.open_connection(*relay.address)
        await round_trip(reader, writer, b"after the cut")
        writer.close()
        pid = relay.pid
    assert not Path(f"/proc/{pid}").exists(), "the relay outlived stop()"


async def test_the_relay_turns_slow_and_fast_on_an_open_connection(echo_server: tuple[str, int]) -> None:
    with await asyncio.to_thread(Relay(echo_server, delay_ms=DELAY_MS).start) as relay:
        assert relay.address is not None
        reader, writer = await asyncio.open_connection(*relay.address)
        try:
            assert await asyncio.to_thread(relay.switch_delay) == 0
            fast = await round_trip(reader, writer, b"fast")
            assert await asyncio.to_thread(relay.switch_delay) == DELAY_MS
            slow = await round_trip(reader, writer, b"slow")
        finally:
            writer.close()
    assert fast < DELAY_MS / 1000 <= 2 * DELAY_MS / 1000 <= slow, (fast, slow)


HOLD_S = 1.0


async def test_the_relay_holds_bytes_and_delivers_them_late_after_the_client_left(
        echo_server: tuple[str, int]) -> None:
    """A partition that heals, by TCP retransmission: the bytes reach the target late, its side still open."""
    with await asyncio.to_thread(Relay(echo_server).start) as relay:
        assert relay.address is not None
        reader, writer = await asyncio.open_connection(*relay.address)
        await round_trip(reader, writer, b"before the hold")
        await asyncio.to_thread(relay.hold, HOLD_S, b"late-bytes")
        sent = time.monotonic()
        writer.write(b"these are late-bytes")
        await writer.drain()
        held_port = await asyncio.to_thread(relay.held, 5.0)
        writer.transport.abort()  # the client gives up and goes
        assert await asyncio.to_thread(relay.delivered, HOLD_S + 5.0) == held_port
        delivered = time.monotonic()
        port, answer = await asyncio.to_thread(relay.closed, 10.0)
        reader, writer = await asyncio.open_connection(*relay.address)  # new connections are not held
        await round_trip(reader, writer, b"late-bytes again, not held")
        writer.close()
    assert delivered - sent >= HOLD_S
    assert (port, answer) == (held_port, b"these are late-bytes")  # the target got them, and answered


def test_the_relay_refuses_a_target_outside_the_test_hosts() -> None:
    done = subprocess.run([sys.executable, "-m", "tests.support.relay", "--listen", "127.0.0.1:0",
                           "--target", "192.0.2.1:80"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "only loopback" in done.stderr, done.stderr


# -- hosts ---------------------------------------------------------------------


def test_a_host_is_reached_via_our_bridge_only(network: HostNetwork, db_host: Host) -> None:
    assert route_device(db_host.address) == network.bridge
    assert network.subnet is not None and network.subnet.subnet_of(BENCHMARK_RANGE)
    inside = subprocess.run(db_host.command(["ip", "-j", "route", "show"]), capture_output=True, text=True,
                            check=True).stdout
    routes = [r["dst"] for r in json.loads(inside)]
    assert routes == [str(network.subnet)], f"routes inside {db_host.namespace}: {routes} (no default route)"


async def test_postgres_in_a_host_answers_at_the_hosts_address(network: HostNetwork, db_host: Host,
                                                                host_postgres: LocalPostgres) -> None:
    assert host_postgres.dsn.startswith(f"postgresql://postgres@{db_host.address}:")
    conn = await asyncpg.connect(host_postgres.dsn, timeout=5)
    try:
        row = await conn.fetchrow("SELECT host(inet_server_addr()) AS server, host(inet_client_addr()) AS client")
    finally:
        await conn.close()
    assert (row["server"], row["client"]) == (db_host.address, network.gateway)


async def answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=CLIENT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False
    try:
        return await conn.fetchval("SELECT 1", timeout=CLIENT_TIMEOUT_S) == 1
    finally:
        conn.terminate()


async def expires(awaitable: Awaitable[object], what: str) -> None:
    """``awaitable`` must end in TimeoutError at the client timeout: no error, no reset, before it."""
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(awaitable, CLIENT_TIMEOUT_S * 3)
    elapsed = time.monotonic() - started
    assert elapsed >= CLIENT_TIMEOUT_S - TIMER_SLACK_S, f"{what} failed after {elapsed:.2f}s, before the timeout"


async def test_a_partitioned_host_is_silent_and_answers_again_once_healed(db_host: Host,
                                                                          host_postgres: LocalPostgres) -> None:
    conn = await asyncpg.connect(host_postgres.dsn, timeout=5)
    try:
        with partitioned(db_host):
            await expires(asyncio.wait_for(asyncio.open_connection(db_host.address, host_postgres.port),
                                           CLIENT_TIMEOUT_S), "a TCP connect")
            await expires(conn.fetchval("SELECT 1", timeout=CLIENT_TIMEOUT_S), "a query on an open connection")
            await expires(asyncpg.connect(host_postgres.dsn, timeout=CLIENT_TIMEOUT_S), "a new connection")
        assert not db_host.partitioned
        await wait_until(lambda: answers(host_postgres.dsn), "PostgreSQL answers once the host is healed", 10.0)
    finally:
        conn.terminate()


async def test_a_frozen_postgres_times_out_and_answers_once_thawed(host_postgres: LocalPostgres) -> None:
    conn = await asyncpg.connect(host_postgres.dsn, timeout=5)
    postmaster = host_postgres.pid()
    try:
        with pytest.raises(RuntimeError, match="the test failed"), frozen(host_postgres) as stopped:
            assert postmaster in stopped and len(stopped) >= 2, f"stopped {stopped}: postmaster and backends"
            assert is_stopped(postmaster) and all(is_stopped(pid) or not Path(f"/proc/{pid}").exists()
                                                  for pid in stopped)
            await expires(conn.fetchval("SELECT 1", timeout=CLIENT_TIMEOUT_S), "a query on an open connection")
            await expires(asyncpg.connect(host_postgres.dsn, timeout=CLIENT_TIMEOUT_S), "a new connection")
            raise RuntimeError("the test failed")  # the thaw must happen anyway
        assert not any(is_stopped(pid) for pid in stopped)
        await wait_until(lambda: answers(host_postgres.dsn), "PostgreSQL answers once thawed", 10.0)
        assert await conn.fetchval("SELECT 2", timeout=5) == 2  # the connection opened before still works
    finally:
        conn.terminate()


def test_a_network_removes_every_namespace_veth_and_bridge_even_when_the_test_fails() -> None:
    require_netns()
    network = HostNetwork()
    with pytest.raises(RuntimeError, match="the test failed"), network:
        network.add_host().partition()
        network.add_host()
        made = network.leftovers()
        assert len(made) == 5, f"two namespaces, two veths and a bridge: {made}"
        raise RuntimeError("the test failed")
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert network.tag not in namespaces and network.tag not in links, f"left behind:\n{namespaces}\n{links}"
