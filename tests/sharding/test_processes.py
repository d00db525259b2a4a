"""How ``run`` tells that a process it started has ended, and how it ended, on real processes.

A multi-threaded process (a running aggregator or writer has five threads) whose
main thread is gone shows as a zombie in /proc while its other threads are
still exiting; the kernel reports its exit status only once the last thread
is gone. SIGKILL on a busy machine opens that window for a moment; here the
child's main thread leaves on its own (the raw exit(2) system call ends only
the calling thread) and another thread lingers for as long as the test needs.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sharding.local.entry import workers
from sharding.local.processes import (
    ProcessRecord,
    alive,
    describe_exit,
    process_stats,
    reap_adopted,
    spawn,
    stop,
    wait_for,
)

# exit(2), not exit_group(2): it ends the calling thread only.
SYS_EXIT = {"x86_64": 60, "aarch64": 93}.get(platform.machine())
MAIN_THREAD_LEAVES = f"""
import ctypes, threading, time
threading.Thread(target=time.sleep, args=(600,)).start()
ctypes.CDLL(None).syscall({SYS_EXIT}, 0)
"""


def state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


@pytest.fixture
def leaderless(tmp_path: Path) -> Iterator[ProcessRecord]:
    """A child of this process whose main thread has exited while another thread still runs."""
    if SYS_EXIT is None:
        pytest.skip(f"exit(2)'s number on {platform.machine()} is not known here")
    record = spawn("aggregator-1", "aggregator", [sys.executable, "-c", MAIN_THREAD_LEAVES], port=0,
                   log=tmp_path / "child.log", env={}, cwd=tmp_path)
    try:
        assert wait_for(lambda: state(record.pid) == "Z", 30.0), f"the main thread did not exit; see {record.log}"
        yield record
    finally:
        stop(record, signal.SIGKILL)  # after a failed test, the lingering thread would sleep on


def test_a_process_whose_status_is_not_yet_reported_is_still_alive(leaderless: ProcessRecord) -> None:
    # The supervisor's order: reap what it can, look at the part, and ask how a part that is gone ended.
    reap_adopted()
    assert alive(leaderless), "a thread of it still runs: it has not exited, and its status cannot be collected"
    os.kill(leaderless.pid, signal.SIGKILL)
    assert wait_for(lambda: not alive(leaderless), 30.0)
    assert describe_exit(leaderless.pid) == "was killed by SIGKILL"


def test_stop_signals_a_process_whose_main_thread_is_gone(leaderless: ProcessRecord) -> None:
    assert stop(leaderless, timeout_s=30.0), "SIGTERM's default action ends every thread"
    assert state(leaderless.pid) is None, "reaped: nothing of it is left"
    assert describe_exit(leaderless.pid) == "was killed by SIGTERM"


def test_the_workers_of_a_process_are_its_live_children() -> None:
    """How a reload tells nginx's old workers are gone: by the one /proc parser, zombies excluded."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert child.pid in workers(os.getpid())
        assert (child.pid, str(os.getpid())) in {(pid, fields[1]) for pid, fields in process_stats()}
        os.kill(child.pid, signal.SIGKILL)
        assert wait_for(lambda: state(child.pid) == "Z", 30.0), "killed, not yet reaped: a zombie"
        assert child.pid not in workers(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert child.pid not in workers(os.getpid())
