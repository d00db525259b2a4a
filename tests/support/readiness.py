"""Probing a part over HTTP while it waits for what it needs (docs/operations.md, Start order)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp

# A probe that gets no answer within this counts as no answer.
PROBE_TIMEOUT_S = 2.0
# How a waiting part's /readyz numbers its tries: "... (try 7)".
TRY_NUMBER = re.compile(r"\(try (\d+)\)")


async def answer(url: str) -> tuple[int, str] | None:
    """(status, body) of a GET on a new connection; None if nothing answered (refused, or no answer in time)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as session, \
                session.get(url) as resp:
            return resp.status, await resp.text()
    except (aiohttp.ClientConnectionError, TimeoutError):
        return None


async def answers(url: str) -> bool:
    """Whether anything answers ``url`` (alive, ready or not)."""
    return await answer(url) is not None


async def tries_reported(readyz: str) -> int:
    """The try number that a waiting part's /readyz reports (it must answer 503); 0 before a try failed."""
    found = await answer(readyz)
    assert found is not None and found[0] == 503, f"not ready while it waits: {found}"
    number = TRY_NUMBER.search(found[1])
    return int(number.group(1)) if number else 0


async def tries_at_least(readyz: str, wanted: int) -> bool:
    return await tries_reported(readyz) >= wanted


async def is_ready(readyz: str) -> bool:
    found = await answer(readyz)
    return found is not None and found[0] == 200


@contextlib.asynccontextmanager
async def silent_server(port: int = 0) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that accepts, reads and never answers (a frozen peer); yields its port."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(1024):
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", port)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
