"""Waiting on a condition with a deadline: the only way tests here wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

DEFAULT_DEADLINE_S = 30.0
DEFAULT_POLL_S = 0.02


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]],
    what: str,
    deadline_s: float = DEFAULT_DEADLINE_S,
    poll_s: float = DEFAULT_POLL_S,
) -> None:
    """Poll ``check`` (plain or async) until it holds; AssertionError naming ``what`` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s:.0f}s: {what}")
        await asyncio.sleep(poll_s)
