"""The listen gate on its own: a writer that cannot open never removes another's socket."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from aiohttp import web

from writer.gate import ListenGate


async def test_a_port_in_use_leaves_the_live_writers_socket_in_place(tmp_path: Path) -> None:
    """A second writer started on a live writer's port fails to open, and the live one's socket file stays."""
    with socket.socket() as taken, socket.socket(socket.AF_UNIX) as live:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "writer.sock"
        live.bind(str(path))
        live.listen()
        runner = web.AppRunner(web.Application())
        await runner.setup()
        try:
            with pytest.raises(OSError):
                await ListenGate("127.0.0.1", port, str(path)).start(runner)
        finally:
            await runner.cleanup()
        assert path.exists()
