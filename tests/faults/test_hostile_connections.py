"""Hostile connections to nginx: smuggling, oversized requests, slow clients, many connections.

Raw sockets to 127.0.0.1 only. Where nginx answers on its own, the status is
nginx's documented one (cited at each case).
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Iterator

import aiohttp
import pytest

from common.hours import MS_PER_HOUR
from sharding.local.cluster import LocalCluster
from tests.faults.raw_http import exchange, request, stored_in_hour

# Every part running (a fault test before may have stopped some).
pytestmark = pytest.mark.usefixtures("healthy")

# Slow and idle clients held open while others are served (bounded: seconds, not minutes).
SLOW_CLIENTS = 200
SLOW_CLIENT_SECONDS = 3.0
IDLE_CONNECTIONS = 1000


def write_target(hour: int, user: str, i: int = 0) -> str:
    return f"/analytics?timestamp={hour * MS_PER_HOUR + i}&user={user}&click"


def smuggled(hour: int, user: str) -> bytes:
    """A complete second request, hidden in a body: it must never be executed."""
    return request("POST", write_target(hour, user), close=False)


# (name, header lines, body, nginx's answer). nginx 1.21.1+ rejects a request that
# has both Content-Length and Transfer-Encoding, and a duplicate Content-Length
# (400, "client sent duplicate header line"); an unknown transfer coding gets
# 501 (ngx_http_request.c: "client sent unknown Transfer-Encoding").
SMUGGLING = [
    ("CL.TE", ["Content-Length: 6", "Transfer-Encoding: chunked"], b"0\r\n\r\n", 400),
    ("TE.CL", ["Transfer-Encoding: chunked", "Content-Length: 3"], b"0\r\n\r\n", 400),
    ("CL.CL", ["Content-Length: 0", "Content-Length: 60"], b"", 400),
    ("CL list", ["Content-Length: 5, 5"], b"hello", 400),
    ("CL negative", ["Content-Length: -1"], b"", 400),
    ("TE with space before colon", ["Transfer-Encoding : chunked"], b"0\r\n\r\n", 400),
    ("TE obfuscated", ["Transfer-Encoding: xchunked"], b"0\r\n\r\n", 501),
    ("TE list", ["Transfer-Encoding: gzip, chunked"], b"0\r\n\r\n", 501),
    ("TE twice", ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"], b"0\r\n\r\n", 400),
    ("bad chunk size", ["Transfer-Encoding: chunked"], b"zz\r\n\r\n", 400),
]


@pytest.mark.parametrize(("name", "headers", "body", "expected"), SMUGGLING, ids=[c[0] for c in SMUGGLING])
def test_conflicting_lengths_are_rejected_and_nothing_hidden_runs(faults_cluster: LocalCluster, hour: int, name: str,
                                                                  headers: list[str], body: bytes,
                                                                  expected: int) -> None:
    front, hidden = f"front-{random.getrandbits(32)}", f"hidden-{random.getrandbits(32)}"
    raw = request("POST", write_target(hour, front), headers, body + smuggled(hour, hidden), close=False)
    answer = exchange(faults_cluster.settings.port, raw)
    assert answer.statuses == (expected,), f"{name}: {answer.raw[:300]!r}"
    assert answer.closed, "nginx closes the connection after a framing error"
    users = {row[1] for row in stored_in_hour(faults_cluster, hour)}
    assert front not in users and hidden not in users


def test_a_pipelined_request_after_a_valid_chunked_body_is_just_the_next_request(faults_cluster: LocalCluster,
                                                                                 hour: int) -> None:
    """Not smuggling: nginx frames the chunked body itself, so the next request is seen as such, once."""
    first, second = f"chunked-{random.getrandbits(32)}", f"next-{random.getrandbits(32)}"
    raw = request("POST", write_target(hour, first, 1), ["Transfer-Encoding: chunked"], b"0\r\n\r\n", close=False)
    answer = exchange(faults_cluster.settings.port, raw + request("POST", write_target(hour, second, 2)))
    assert answer.statuses == (204, 204)
    users = [row[1] for row in stored_in_hour(faults_cluster, hour)]
    assert users.count(first) == 1 and users.count(second) == 1


@pytest.mark.parametrize(("size", "expected"), [(1024, 204), (1025, 413), (1_000_000, 413)])
def test_bodies_over_one_kilobyte_are_refused(faults_cluster: LocalCluster, hour: int, size: int,
                                              expected: int) -> None:
    """client_max_body_size 1k (the template): 413 with the contract's one-line text, nothing stored."""
    user = f"body-{size}-{random.getrandbits(32)}"
    raw = request("POST", write_target(hour, user), [f"Content-Length: {size}"], b"x" * size)
    answer = exchange(faults_cluster.settings.port, raw)
    assert answer.status == expected, answer.raw[:300]
    stored = [row[1] for row in stored_in_hour(faults_cluster, hour)].count(user)
    assert stored == (1 if expected == 204 else 0)


def test_a_chunked_body_over_one_kilobyte_is_refused(faults_cluster: LocalCluster, hour: int) -> None:
    user = f"chunks-{random.getrandbits(32)}"
    body = b"".join(b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    answer = exchange(faults_cluster.settings.port,
                      request("POST", write_target(hour, user), ["Transfer-Encoding: chunked"], body))
    assert answer.status == 413
    assert user not in {row[1] for row in stored_in_hour(faults_cluster, hour)}


@pytest.mark.parametrize(("target", "headers", "expected"), [
    # A request line longer than one large_client_header_buffers buffer (8k): 414 (nginx docs).
    ("/analytics?timestamp=1&user=" + "u" * 9000 + "&click", [], 414),
    ("/analytics/1/" + "u" * 9000 + "/click", [], 414),
    ("/analytics?timestamp=" + "9" * 9000, [], 414),
    # One header line longer than that buffer: nginx's 400 "Request Header Or Cookie Too Large" (nginx docs).
    ("/analytics?timestamp=1&user=big&click", ["X-Big: " + "b" * 9000], 400),
    # Within nginx's limits, the contract's own 400s.
    ("/analytics?timestamp=1&user=" + "u" * 129 + "&click", [], 400),
    ("/analytics?timestamp=1&user=" + "%F0%9F%99%82" * 129 + "&click", [], 400),
    ("/analytics?timestamp=1&user=u&click&" + "&".join(f"p{i}=1" for i in range(500)), [], 400),
])
def test_oversized_requests_get_a_clear_refusal(faults_cluster: LocalCluster, target: str, headers: list[str],
                                                expected: int) -> None:
    method = "GET" if "user=" not in target and "/analytics/" not in target else "POST"
    answer = exchange(faults_cluster.settings.port, request(method, target, headers))
    assert answer.status == expected, answer.raw[:300]


def test_many_headers_get_a_refusal_not_a_crash(faults_cluster: LocalCluster, hour: int) -> None:
    """Beyond 4 x 8k of headers nginx answers 400 itself (large_client_header_buffers)."""
    headers = [f"X-H{i}: {'v' * 100}" for i in range(400)]
    answer = exchange(faults_cluster.settings.port, request("POST", write_target(hour, "hdrs"), headers))
    assert answer.status == 400


# -- slow and many clients ---------------------------------------------------------


def open_connections(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sockets.append(sock)
    return sockets


@pytest.fixture
def slow_clients(faults_cluster: LocalCluster) -> Iterator[list[socket.socket]]:
    sockets = open_connections(faults_cluster.settings.port, SLOW_CLIENTS)
    yield sockets
    for sock in sockets:
        sock.close()


async def serve_normal_clients(port: int, hour: int, prefix: str, count: int) -> list[int]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async def one(i: int) -> int:
            async with session.post(f"http://127.0.0.1:{port}{write_target(hour, f'{prefix}{i}', i)}") as resp:
                return resp.status
        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_slow_clients_do_not_block_others(faults_cluster: LocalCluster, hour: int,
                                                slow_clients: list[socket.socket]) -> None:
    """Slowloris: many clients trickle a request line byte by byte; the others are served meanwhile."""
    line = f"POST {write_target(hour, 'slowloris')} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
    deadline = time.monotonic() + SLOW_CLIENT_SECONDS
    served: list[int] = []
    step = 0
    while time.monotonic() < deadline:
        for sock in slow_clients:
            sock.send(line[step % len(line): step % len(line) + 1])
        step += 1
        served += await serve_normal_clients(faults_cluster.settings.port, hour, f"fast{step}-", 10)
        await asyncio.sleep(0.2)
    assert served and all(status == 204 for status in served)
    assert step < len(line), "the slow clients never finished their request line"
    for sock in slow_clients:  # still connected: they were held open all along, not dropped
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)


async def test_many_idle_connections_do_not_block_others(faults_cluster: LocalCluster, hour: int) -> None:
    sockets = await asyncio.to_thread(open_connections, faults_cluster.settings.port, IDLE_CONNECTIONS)
    try:
        statuses = await serve_normal_clients(faults_cluster.settings.port, hour, f"crowd{random.getrandbits(16)}-",
                                              200)
        assert statuses.count(204) == len(statuses), statuses
    finally:
        for sock in sockets:
            sock.close()
