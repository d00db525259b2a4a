"""Waiting for a part that is not there yet: each try within its own bound, forever, with a capped backoff.

Parts start in any order (compose and Kubernetes start them all at once; a
person may start them by hand in any order): a writer may start before its
database, an aggregator before the entry host that serves its shard file,
the entry host before the writers. A service waits for what it needs
without end, is not ready meanwhile and says what it waits for (its
``/readyz``, its log); an orchestrator sees it alive and leaves it running.
A command a person runs (``apply``) refuses instead, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# The first pause after a failed try: a part that is almost up is found at once.
FIRST_DELAY_S = 0.1
# A wait whose reason does not change is logged again every this many tries
# (about once a minute with a 5 s cap), so that a long wait stays visible.
LOG_EVERY_TRIES = 12


@dataclass(frozen=True)
class Backoff:
    """Pauses between tries: doubling from ``first_s``, never above ``max_s``."""

    max_s: float
    first_s: float = FIRST_DELAY_S

    def delay(self, failed_tries: int) -> float:
        return min(self.max_s, self.first_s * 2 ** min(max(failed_tries - 1, 0), 30))


@dataclass
class Waiting:
    """What a part waits for, how many tries failed and why the last one did; ``None`` reason once done."""

    what: str
    tries: int = 0
    reason: str | None = None
    done: bool = False
    # Where a failed try is told (a command prints it, a service logs it).
    report: Callable[[str], None] = field(default=log.warning, repr=False, compare=False)

    def describe(self) -> str:
        """For /readyz and the log: ``waiting for X: why (try N)``."""
        if self.reason is None:
            return f"waiting for {self.what}"
        return f"waiting for {self.what}: {self.reason} (try {self.tries})"

    def failed(self, reason: str) -> None:
        """One more failed try; logged when the reason changes, and every ``LOG_EVERY_TRIES`` tries."""
        self.tries += 1
        changed, self.reason = reason != self.reason, reason
        if changed or self.tries % LOG_EVERY_TRIES == 0:
            self.report(f"{self.describe()}; trying again")

    def succeeded(self) -> None:
        if self.tries:
            log.info("%s: there after %d failed tries", self.what, self.tries)
        self.done, self.reason = True, None


def failure_text(exc: BaseException) -> str:
    """``TypeName: message`` (the message may be empty, as a TimeoutError's is)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def retry_forever(attempt: Callable[[], Awaitable[T]], waiting: Waiting, backoff: Backoff,
                        retry_on: tuple[type[BaseException], ...]) -> T:
    """Call ``attempt`` until it returns; it bounds each try itself. Other exceptions (and cancelling) go through."""
    while True:
        try:
            result = await attempt()
        except retry_on as exc:
            waiting.failed(failure_text(exc))
            await asyncio.sleep(backoff.delay(waiting.tries))
            continue
        waiting.succeeded()
        return result
