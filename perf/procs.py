"""CPU accounting of processes: the load generator's own, and each component's during a run.

On a 2-core machine the load generator competes with what it measures, so
every run records how much CPU it and every part of the stack used.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from perf.results import OTHER, SOFTIRQ

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Polling period while waiting for a measured child to finish.
POLL_S = 0.05
# A generator thread using more than this share of a core is saturated:
# its figures are the generator's limit, not the server's.
SATURATED_CORE_SHARE = 0.9


@dataclass(frozen=True)
class Measured:
    """A finished child process: its output, exit status, wall time and CPU time (user + system)."""

    stdout: str
    returncode: int
    wall_s: float
    cpu_s: float

    @property
    def cores(self) -> float:
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


def run_measured(argv: Sequence[str], *, timeout_s: float, env: Mapping[str, str] | None = None) -> Measured:
    """Run a child to the end (killed by pid past the deadline) and account its own CPU time."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.monotonic()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=None if env is None else dict(env))
        deadline = start + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.kill(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(POLL_S)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        wall = time.monotonic() - start
        out.seek(0)
        return Measured(out.read(), proc.returncode, wall, usage.ru_utime + usage.ru_stime)


def cpu_ticks(pid: int) -> int:
    """User plus system CPU ticks of one process; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (PostgreSQL backends, nginx workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, softirq) CPU ticks of all cores since boot (/proc/stat).

    softirq is mostly the kernel's loopback network processing, which no
    process is charged for: it is the load's, but not any component's.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return sum(fields[:8]) - fields[3] - fields[4], fields[6]


class ComponentCpu:
    """CPU used by named groups of processes (a group is root pids plus their children) over a span."""

    def __init__(self, groups: Mapping[str, Sequence[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self._start: dict[str, dict[int, int]] = {}
        self._machine = (0, 0)
        self._t0 = 0.0

    def _pids(self, roots: Sequence[int]) -> list[int]:
        return [p for root in roots for p in (root, *children(root))]

    def _snapshot(self) -> dict[str, dict[int, int]]:
        return {name: {p: cpu_ticks(p) for p in self._pids(roots)} for name, roots in self.groups.items()}

    def start(self) -> None:
        self._start = self._snapshot()
        self._machine = machine_ticks()
        self._t0 = time.monotonic()

    def stop(self, generator_cores: float = 0.0) -> dict[str, float]:
        """Cores used by each group since ``start`` (backends that came and went are missed), by the
        kernel's softirq work (``softirq``), and by everything else (``other``: other processes)."""
        end, wall = self._snapshot(), max(time.monotonic() - self._t0, 1e-9)
        used = {name: sum(t - self._start[name].get(p, 0) for p, t in ticks.items()) / CLOCK_TICKS / wall
                for name, ticks in end.items()}
        busy, softirq = (now - then for now, then in zip(machine_ticks(), self._machine, strict=True))
        used[SOFTIRQ] = softirq / CLOCK_TICKS / wall
        used[OTHER] = max(0.0, busy / CLOCK_TICKS / wall - sum(used.values()) - generator_cores)
        return used
