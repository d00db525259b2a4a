"""Whether this writer's database commits, and what the writer does about it.

A probe commits a heartbeat row every ``interval_s``, each within its own
bound, and probes again at once after a failure. After
``PROBE_FAILURES_FOR_DOWN`` failures in a row the database is down:
``on_change(reason)`` runs, and the writer refuses events at once with 503
(nothing is sent) and closes its listening socket (writer/gate.py). A commit
whose outcome was unknown counts as a failure and calls for a probe now: a
frozen database is down within two bounds, while one cut connection on a
healthy one does not move the shard's users (a client's retry with the same
key then lands on the same shard, where the key is known). The first
heartbeat that commits again calls ``on_change(None)``.

A commit that PostgreSQL rolled back because it could not write (no space
left, an I/O error) also counts as a failure and calls a probe now; until a
probe succeeds, probes must also prove that the shard can allocate space
(writer/db.py ``heartbeat``). The heartbeat alone would not do: it updates
one row in place, which needs no new page, and keeps committing on a full
disk while every batch is rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

# One slow heartbeat on a busy machine is not an outage; two in a row are.
PROBE_FAILURES_FOR_DOWN = 2
# After a failed heartbeat the next comes almost at once (a refused connection
# fails in microseconds: this keeps that from spinning).
RETRY_PAUSE_S = 0.05

# A probe commits a heartbeat; with True it must also prove that the shard can allocate space.
Probe = Callable[[bool], Awaitable[None]]


class DatabaseHealth:
    """Probes the database; ``on_change`` gets a reason when it goes down and None when it is back."""

    def __init__(self, probe: Probe, on_change: Callable[[str | None], None], *, interval_s: float) -> None:
        self._probe = probe
        self._on_change = on_change
        self._interval_s = interval_s
        self._failures = 0
        self._wake = asyncio.Event()
        self.down_reason: str | None = None
        self.prove_space = False

    @property
    def up(self) -> bool:
        return self.down_reason is None

    def commit_outcome_unknown(self, reason: str) -> None:
        """A commit got no answer: one failure, and a probe now."""
        self._failed(f"a commit got no answer ({reason})")
        self._wake.set()

    def cannot_write(self, reason: str) -> None:
        """A commit was rolled back for want of space: one failure, a probe now, and probes prove space from now on."""
        self.prove_space = True
        self._failed(f"a commit could not write ({reason})")
        self._wake.set()

    async def run(self) -> None:
        """Probe forever; each probe carries its own bound."""
        while True:
            self._wake.clear()  # before the probe: a wake during it is not lost
            pause = self._interval_s if await self.check() else RETRY_PAUSE_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def check(self) -> bool:
        """One heartbeat; whether it committed."""
        try:
            await self._probe(self.prove_space)
        except Exception as exc:  # any failure of the heartbeat counts
            self._failed(f"the database cannot commit ({type(exc).__name__})")
            return False
        self._failures = 0
        self.prove_space = False
        if not self.up:
            log.warning("the database commits again: taking writes")
            self.down_reason = None
            self._on_change(None)
        return True

    def _failed(self, reason: str) -> None:
        self._failures += 1
        if self._failures < PROBE_FAILURES_FOR_DOWN or not self.up:
            return
        log.error("taking no writes: %s", reason)
        self.down_reason = reason
        self._on_change(reason)
