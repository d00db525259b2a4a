"""``python -m sharding run`` as a user runs it: a child process in the foreground, its output in a file.

Also what a test needs to say that nothing of a cluster is left running:
every process whose environment names the cluster's DATA_DIR (``run``
passes its environment to everything it starts) or whose working directory
is inside it (PostgreSQL's postmaster and backends, nginx).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from sharding.local.cluster import LocalCluster
from tests.support.cluster import REPO_ROOT, TEST_ENV, cli_env

UP_MESSAGE = "Reactions is up on"
# Starting 2-3 shards with their PostgreSQL on a loaded machine, and stopping them (writers drain).
START_DEADLINE_S = 90.0
STOP_DEADLINE_S = 90.0
POLL_S = 0.1


class RunCommand:
    """One ``python -m sharding run`` child, its output in a file; stopped by its pid."""

    def __init__(self, cluster: LocalCluster, output: Path, shards: int = 1, aggregators: int = 1) -> None:
        self.cluster, self.output = cluster, output
        self.shards, self.aggregators = shards, aggregators
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        """Start ``run`` and return at once (``start`` also waits until it is up); the output file starts afresh."""
        env = {**cli_env(self.cluster), "SHARDS": str(self.shards), "AGGREGATORS": str(self.aggregators), **TEST_ENV}
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "sharding", "run"], cwd=REPO_ROOT, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def start(self) -> None:
        self.launch()
        assert self.proc is not None
        deadline = time.monotonic() + START_DEADLINE_S
        while UP_MESSAGE not in self.text():
            assert self.proc.poll() is None, f"run exited:\n{self.text()}"
            assert time.monotonic() < deadline, f"run not up:\n{self.text()}"
            time.sleep(POLL_S)

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=STOP_DEADLINE_S)


def restart_lines(text: str, part: str) -> list[str]:
    """The lines of ``run``'s output saying that ``part`` was restarted."""
    return [line for line in text.splitlines() if re.search(rf"\] {re.escape(part)} restarted: pid \d+", line)]


def processes_of(cluster: LocalCluster) -> list[int]:
    """Every live process that belongs to the cluster, found without its records (so strays show too)."""
    root, found = str(cluster.root), []
    marker = f"DATA_DIR={root}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (proc / "environ").read_bytes().split(b"\0") or os.readlink(proc / "cwd").startswith(root):
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in ("Z", "X"):
                    found.append(int(proc.name))
    return found
