"""Freezing a whole PostgreSQL server: a gray failure where it accepts connections and answers nothing.

SIGSTOP goes to the postmaster first (so it forks no new backend), then to
every process working in the data directory (tests/support/postmaster.py),
until no new one shows up; SIGCONT undoes it. ``frozen`` guarantees the thaw
even when the test fails: a postmaster left stopped would hang CI.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from sharding.local.postgres import LocalPostgres
from tests.support.postmaster import processes_in

# Rounds of looking for processes forked while we were stopping the others;
# one is enough once the postmaster is stopped, the rest is a margin.
FREEZE_ROUNDS = 5
# How long the stopped processes may take to be seen stopped, and how often to look.
STOP_DEADLINE_S = 10.0
POLL_S = 0.01


def _signal(pid: int, sig: signal.Signals) -> bool:
    """Send ``sig``; False if the process is gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def is_stopped(pid: int) -> bool:
    """Whether the process is stopped by a signal (state T in /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def freeze(pg: LocalPostgres, stopped: list[int]) -> None:
    """SIGSTOP the postmaster and every backend; each pid is appended to ``stopped`` as soon as it is sent."""
    postmaster = pg.pid()
    if postmaster is None:
        raise RuntimeError(f"no PostgreSQL running in {pg.data_dir}")
    if _signal(postmaster, signal.SIGSTOP):
        stopped.append(postmaster)
    data_dir = pg.data_dir.resolve()
    for _ in range(FREEZE_ROUNDS):
        new = [pid for pid in processes_in(data_dir) if pid not in stopped]
        if not new:
            break
        for pid in new:
            if _signal(pid, signal.SIGSTOP):
                stopped.append(pid)
    wait_stopped(stopped)


def wait_stopped(pids: list[int], deadline_s: float = STOP_DEADLINE_S) -> None:
    """Return once every pid is stopped or gone: a SIGSTOP takes effect when the process is next scheduled,
    which on a busy machine is a moment after kill() returns."""
    deadline = time.monotonic() + deadline_s
    while not all(is_stopped(pid) or not Path(f"/proc/{pid}").exists() for pid in pids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all of {pids} stopped within {deadline_s:.0f}s")
        time.sleep(POLL_S)


def thaw(pg: LocalPostgres, stopped: list[int]) -> None:
    """SIGCONT every pid that was stopped, and every process in the data directory (belt and braces)."""
    for pid in [*stopped, *processes_in(pg.data_dir.resolve())]:
        _signal(pid, signal.SIGCONT)


@contextlib.contextmanager
def frozen(pg: LocalPostgres) -> Iterator[list[int]]:
    """The server frozen inside the block (the pids stopped); thawed on the way out, whatever happened."""
    stopped: list[int] = []
    try:
        freeze(pg, stopped)
        yield stopped
    finally:
        thaw(pg, stopped)
