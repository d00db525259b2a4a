"""The gray-failure phases' probe of a writer's port: what counts as refused."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.faults import gray


async def test_a_closed_port_refuses() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening: refused
    assert await gray.refuses_connections(address)


async def test_a_listening_port_does_not_refuse() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    async with server:
        assert not await gray.refuses_connections(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")


@pytest.mark.parametrize("error", [ConnectionRefusedError, ConnectionResetError])
async def test_a_closing_listener_counts_as_refused(monkeypatch: pytest.MonkeyPatch,
                                                    error: type[OSError]) -> None:
    """A listener that closes resets the connection it had queued (ECONNRESET): the writer is out, not a problem."""
    async def connect(host: str, port: int) -> None:
        raise error()

    monkeypatch.setattr(gray.asyncio, "open_connection", connect)
    assert await gray.refuses_connections("127.0.0.1:1")
