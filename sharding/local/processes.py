"""The processes of a local cluster, recorded in files so that any command can find them.

Every process the cluster starts (writers, aggregators, nginx) gets a record
under ``DATA_DIR/run/``: its pid, its start time (so a reused pid is never
taken for ours), its port and its log file. ``run`` supervises and stops what
the records list, including processes that ``add-shard`` started from
another command. Processes are only ever signalled by recorded pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# Polling period while waiting for a process or an endpoint.
POLL_S = 0.05
# A probe that takes longer than this counts as not ready.
PROBE_TIMEOUT_S = 2.0


class ProcessError(RuntimeError):
    """A managed process did not start, did not get ready or would not stop."""


@dataclass(frozen=True)
class ProcessRecord:
    name: str  # "writer-a", "aggregator-1", "nginx"
    role: str  # "writer", "aggregator", "nginx"
    pid: int
    started: int  # /proc/<pid>/stat start time, in clock ticks since boot
    port: int
    log: str
    shard: str | None = None
    host: str = "127.0.0.1"  # where it listens (records made before HOST existed have none)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...); None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()


def process_stats() -> Iterator[tuple[int, list[str]]]:
    """Every process in /proc with its ``stat_fields``; one that is gone by the time it is read is skipped."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            fields = stat_fields(int(proc.name))
            if fields is not None:
                yield int(proc.name), fields


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot); None if it is gone or a zombie."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


# The processes this process started, kept so that their exit status is collected.
_children: dict[int, subprocess.Popen[bytes]] = {}
# How the processes this one reaped ended (subprocess's convention: -N for signal N).
_exit_statuses: dict[int, int] = {}
# prctl(2) option: orphaned descendants are re-parented to this process instead of init.
PR_SET_CHILD_SUBREAPER = 36


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it does not stay a zombie."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _exit_statuses[pid] = child.returncode
            del _children[pid]
        return
    with contextlib.suppress(ChildProcessError):
        waited, status = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            _exit_statuses[pid] = os.waitstatus_to_exitcode(status)


def exit_status(pid: int) -> int | None:
    """How ``pid`` ended, if this process reaped it: the exit code, or -N if signal N killed it."""
    reap(pid)
    return _exit_statuses.get(pid)


def describe_exit(pid: int | None) -> str:
    """'exited with code 1', 'was killed by SIGKILL', or why how it ended is unknown."""
    status = None if pid is None else exit_status(pid)
    if status is None:
        return "exited (how is unknown: it was not a child of this process)"
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with code {status}"


def become_subreaper() -> None:
    """Adopt orphaned descendants (Linux): processes whose parent exits become ours.

    A writer that ``add-shard`` started, or a postmaster once its ``pg_ctl``
    has exited, would otherwise be re-parented to init: nobody here would
    learn how it died, and a dead postmaster would linger as a zombie (with
    its pid still in /proc, PostgreSQL refuses to start again).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_adopted() -> None:
    """Collect every zombie child that no ``Popen`` of ours waits for (adopted orphans, their backends)."""
    me = str(os.getpid())
    for pid, fields in process_stats():
        if fields[0] == "Z" and fields[1] == me and pid not in _children:
            reap(pid)


def alive(record: ProcessRecord) -> bool:
    """Whether the recorded process still runs; a child of this process runs until its exit status is collected.

    /proc shows a multi-threaded process as a zombie as soon as its main
    thread has exited (a SIGKILL reaches the threads one by one, slowly on a
    busy machine), but the kernel reports its exit status only once the last
    thread is gone. Until then it still runs (and may hold its port), and how
    it ended cannot be known yet. So a zombie child that ``reap`` could not
    collect counts as alive; other processes' zombies count as gone.
    """
    reap(record.pid)
    fields = stat_fields(record.pid)
    if fields is None or int(fields[19]) != record.started:
        return False
    if fields[0] == "Z":
        return fields[1] == str(os.getpid())  # our child, still exiting: not reaped, so not gone
    return fields[0] != "X"


class Registry:
    """The records of one cluster, one JSON file per process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def add(self, record: ProcessRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{record.name}.json"
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, self.directory / f"{record.name}.json")

    def remove(self, name: str) -> None:
        (self.directory / f"{name}.json").unlink(missing_ok=True)

    def get(self, name: str) -> ProcessRecord | None:
        try:
            return ProcessRecord(**json.loads((self.directory / f"{name}.json").read_text()))
        except FileNotFoundError:
            return None

    def all(self, role: str | None = None) -> list[ProcessRecord]:
        records = [ProcessRecord(**json.loads(p.read_text())) for p in sorted(self.directory.glob("*.json"))]
        return [r for r in records if role is None or r.role == role]


def spawn(name: str, role: str, argv: Sequence[str], *, port: int, log: Path, env: Mapping[str, str],
          cwd: Path, shard: str | None = None, host: str = "127.0.0.1") -> ProcessRecord:
    """Start a process in its own session (so a terminal's Ctrl-C reaches only ``run``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **env}, cwd=cwd, start_new_session=True)
    _children[proc.pid] = proc
    started = start_ticks(proc.pid)
    if started is None:
        proc.wait()
        raise ProcessError(f"{name} exited at once (exit {proc.returncode}); see {log}")
    return ProcessRecord(name=name, role=role, pid=proc.pid, started=started, port=port, log=str(log), shard=shard,
                         host=host)


def stop(record: ProcessRecord, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0) -> bool:
    """Signal the recorded pid (only if it is still the same process) and wait; SIGKILL past the deadline.

    Returns False if the process had to be killed.
    """
    if not alive(record):
        return True
    os.kill(record.pid, sig)
    if wait_for(lambda: not alive(record), timeout_s):
        return True
    if alive(record):
        os.kill(record.pid, signal.SIGKILL)
        wait_for(lambda: not alive(record), 5.0)
    return False


def wait_for(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


def http_get(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a GET; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, dict(resp.headers), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return 0, {}, ""


def wait_ready(record: ProcessRecord, path: str = "/readyz", timeout_s: float = 60.0,
               checkpoint: Callable[[], None] | None = None) -> None:
    """Poll the process's endpoint until 200; fail at once if the process dies.

    ``checkpoint`` is called at every poll and may raise (``run`` stops waiting on Ctrl-C).
    """
    url = f"http://{record.address}{path}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if checkpoint is not None:
            checkpoint()
        if not alive(record):
            raise ProcessError(f"{record.name} (pid {record.pid}) exited while starting:\n{log_tail(record.log)}")
        if http_get(url)[0] == 200:
            return
        time.sleep(POLL_S * 2)
    raise ProcessError(f"{record.name} (pid {record.pid}) not ready at {url} after {timeout_s:.0f}s; "
                       f"see {record.log}:\n{log_tail(record.log)}")


def log_tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on the port (servers set SO_REUSEADDR, so TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
