"""Whether this writer's database commits, and what the writer does about it.

A probe commits a heartbeat row every ``interval_s``, each within its own
bound. After ``PROBE_FAILURES_FOR_DOWN`` failures in a row, or at once when a
commit's outcome was unknown (a frozen or cut-off database), the database is
down: ``on_change(reason)`` runs, and the writer refuses events at once with
503 (nothing is sent) and closes its listening socket (writer/gate.py). The
first heartbeat that commits again calls ``on_change(None)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

# One slow heartbeat on a busy machine is not an outage; two in a row are.
PROBE_FAILURES_FOR_DOWN = 2

Probe = Callable[[], Awaitable[None]]


class DatabaseHealth:
    """Probes the database; ``on_change`` gets a reason when it goes down and None when it is back."""

    def __init__(self, probe: Probe, on_change: Callable[[str | None], None], *, interval_s: float) -> None:
        self._probe = probe
        self._on_change = on_change
        self._interval_s = interval_s
        self._failures = 0
        self._wake = asyncio.Event()
        self.down_reason: str | None = None

    @property
    def up(self) -> bool:
        return self.down_reason is None

    def commit_outcome_unknown(self, reason: str) -> None:
        """A commit got no answer: down now; the next heartbeat that commits brings it back."""
        self._failures = PROBE_FAILURES_FOR_DOWN
        self._set_down(f"a commit got no answer ({reason})")
        self._wake.set()

    async def run(self) -> None:
        """Probe forever; each probe carries its own bound."""
        while True:
            await self.check()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)

    async def check(self) -> None:
        try:
            await self._probe()
        except Exception as exc:  # any failure of the heartbeat counts
            self._failures += 1
            if self._failures >= PROBE_FAILURES_FOR_DOWN:
                self._set_down(f"the database cannot commit ({type(exc).__name__})")
            return
        self._failures = 0
        if not self.up:
            log.warning("the database commits again: taking writes")
            self.down_reason = None
            self._on_change(None)

    def _set_down(self, reason: str) -> None:
        if not self.up:
            return
        log.error("taking no writes: %s", reason)
        self.down_reason = reason
        self._on_change(reason)
