"""SIGINT and SIGTERM as events that code reads at safe points, never as exceptions raised anywhere.

A handler that raises can fire between starting a process and recording it:
the process runs on in its own session and no record lists it. So ``run``
queues the signals it receives and its loop reads the queue (as uvicorn's
``supervisors/multiprocess.py`` does), and every command holds the signals
back while it starts a process and records it (``deferred_signals``).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Shutdown(Exception):
    """SIGINT or SIGTERM reached ``run``; raised by the code that read the queue, not by the handler."""


class SignalQueue:
    """The stop signals received so far; the handler only appends and wakes the waiting loop."""

    def __init__(self) -> None:
        self._received: list[int] = []
        self._wakeup = threading.Event()

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._received.append(signum)
        self._wakeup.set()

    def ignore(self) -> None:
        """From here on (stopping everything in order), further Ctrl-C's change nothing."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

    def received(self) -> str | None:
        """The name of the first stop signal received, None if none was."""
        return signal.Signals(self._received[0]).name if self._received else None

    def check(self) -> None:
        """Raise ``Shutdown`` if a stop signal was received: call it where stopping is safe."""
        name = self.received()
        if name is not None:
            raise Shutdown(name)

    def wait(self, timeout_s: float) -> None:
        """Sleep up to ``timeout_s``; a stop signal ends the sleep at once."""
        self._wakeup.wait(timeout_s)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while the block runs, then deliver them to the handlers there were.

    Wrap what must not be split: starting a process and recording it.
    Python runs signal handlers in the main thread only, so in another thread
    nothing can interrupt the block and there is nothing to hold back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {signum: signal.signal(signum, lambda received, _frame: held.append(received))
                for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for received in held:
            signal.raise_signal(received)
