"""A local PostgreSQL cluster per shard, run as an unprivileged OS user.

PostgreSQL refuses to run as root; when we are root, every server command
goes through ``runuser -u postgres``. A server may also run inside a network
namespace (the gray-failure tests' hosts): it then listens on that host's
address and its server commands go through a prefix such as
``ip netns exec NS``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sharding.local.passfile import ensure_passfile, password_of, scram_verifier
from sharding.local.processes import POLL_S, start_ticks

PG_USER = os.environ.get("REACTIONS_PG_OS_USER", "postgres")
DATABASE = "reactions"
# Enough for several writer and aggregator pools against one shard.
MAX_CONNECTIONS = 300
START_TIMEOUT_S = 60
# Where a server listens unless told otherwise: loopback, never a routed address.
LOOPBACK = "127.0.0.1"
# postmaster.pid holds the postmaster's start in whole seconds, taken a moment
# after the process was created; the kernel's boot time is itself rounded to
# the second. A pid whose process started further apart than this from the
# recorded time is another process that reused the pid.
PID_START_SLACK_S = 3.0
# How long a crashed server's leftovers (its backends, its unreaped
# postmaster) may take to go: backends notice the postmaster's death at their
# next wait, which under load is a moment, not minutes.
CRASH_CLEANUP_TIMEOUT_S = 30.0
# Every connection, local socket or TCP, proves the password (docs/operations.md, The local stack).
AUTH_METHOD = "scram-sha-256"
# Off loopback, who may connect (with the password): the host's own subnet, unless told otherwise.
DEFAULT_ALLOWED_CLIENTS = "samenet"


def default_passfile() -> Path:
    """libpq's own choice: PGPASSFILE, else ~/.pgpass."""
    return Path(os.environ.get("PGPASSFILE") or Path.home() / ".pgpass")


def pg_bin(name: str) -> str:
    """Find a PostgreSQL server binary (PATH first, then Debian's layout)."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise FileNotFoundError(f"{name} not found: install PostgreSQL (make install does)")


def as_pg_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", PG_USER, "--", *argv]


@dataclass
class LocalPostgres:
    """One PostgreSQL server with its own data directory and port.

    ``listen_address`` is where it listens and what its DSNs name;
    ``command_prefix`` goes before the server commands (``pg_ctl``), for a
    server run in another network namespace (``("ip", "netns", "exec", NS)``).
    ``passfile`` holds the ``postgres`` role's password (created with a new
    secret if missing; passfile.py); ``allowed_clients`` is pg_hba's address
    field for clients off loopback.
    """

    data_dir: Path
    port: int
    listen_address: str = LOOPBACK
    command_prefix: tuple[str, ...] = ()
    passfile: Path = field(default_factory=default_passfile)
    allowed_clients: str = DEFAULT_ALLOWED_CLIENTS

    @property
    def dsn(self) -> str:
        return self.dsn_for(DATABASE)

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{PG_USER}@{self.listen_address}:{self.port}/{database}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb (once): scram-sha-256 for every connection, the passfile's password for ``postgres``."""
        if self.initialized():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._give_to_pg_user(self.data_dir)
        with self._password_file() as pwfile:
            subprocess.run(
                as_pg_user([pg_bin("initdb"), "-D", str(self.data_dir), "-U", PG_USER, f"--auth={AUTH_METHOD}",
                            f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"]),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# Reactions shard\n"
                f"listen_addresses = '{self.listen_address}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.data_dir}'\n"
                f"max_connections = {MAX_CONNECTIONS}\n"
                "synchronous_commit = on\n"
                "fsync = on\n"
                f"password_encryption = '{AUTH_METHOD}'\n"
            )
        if self.listen_address != LOOPBACK:
            # Clients on other hosts, with the password; samenet by default: the host's own subnet.
            with open(self.data_dir / "pg_hba.conf", "a") as hba:
                hba.write(f"\n# Reactions: clients off this host\nhost all all {self.allowed_clients} {AUTH_METHOD}\n")

    @contextlib.contextmanager
    def _password_file(self) -> Iterator[Path]:
        """The password alone in a file only the server's user reads, for initdb; removed at once after."""
        ensure_passfile(self.passfile, PG_USER)
        password = password_of(self.passfile, PG_USER)
        folder = Path(tempfile.mkdtemp(prefix="reactions-pw-"))
        try:
            path = folder / "pw"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(password + "\n")
            if os.geteuid() == 0:
                user = pwd.getpwnam(PG_USER)
                os.chown(folder, user.pw_uid, user.pw_gid)
                os.chown(path, user.pw_uid, user.pw_gid)
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def require_password(self) -> None:
        """A data directory made before passwords (trust in pg_hba.conf): set the password, then require it.

        The role gets the password's SCRAM verifier (the password itself is never
        sent), over stdin, while trust still lets us in; then pg_hba.conf says
        scram-sha-256 wherever it said trust, and the server reloads it.
        """
        hba = self.data_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        if not any(line.split()[-1:] == ["trust"] for line in lines if not line.lstrip().startswith("#")):
            return
        ensure_passfile(self.passfile, PG_USER)
        verifier = scram_verifier(password_of(self.passfile, PG_USER))
        subprocess.run([*self._psql("postgres"), "-f", "-"], input=f"ALTER ROLE {PG_USER} PASSWORD '{verifier}';\n",
                       check=True, capture_output=True, text=True, env=self._client_env())
        rewritten = [line.rsplit("trust", 1)[0] + AUTH_METHOD
                     if line.split()[-1:] == ["trust"] and not line.lstrip().startswith("#") else line
                     for line in lines]
        hba.write_text("\n".join(rewritten) + "\n")
        subprocess.run(self.server_command([pg_bin("pg_ctl"), "-D", str(self.data_dir), "reload"]), check=True,
                       stdout=subprocess.DEVNULL)

    def _psql(self, database: str) -> list[str]:
        return [pg_bin("psql"), "-h", self.listen_address, "-p", str(self.port), "-U", PG_USER, "-d", database,
                "-tAq", "-v", "ON_ERROR_STOP=1", "-w"]

    def _client_env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSFILE": str(self.passfile)}

    def server_command(self, argv: list[str]) -> list[str]:
        """A server command as the PostgreSQL user, behind the command prefix (which must run as root)."""
        return [*self.command_prefix, *as_pg_user(argv)]

    def start(self) -> None:
        """Start the server and create the database; returns once it accepts connections."""
        self.init()
        subprocess.run(
            self.server_command([pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                                 "-t", str(START_TIMEOUT_S), "-o", f"-p {self.port}", "start"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.require_password()
        self.create_database(DATABASE)

    def stop(self, mode: str = "fast") -> None:
        if self.pid() is None:
            return
        subprocess.run(
            self.server_command([pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash), leaving its children to die with it."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while start_ticks(pid) is not None and time.monotonic() < deadline:
                time.sleep(POLL_S)

    def pid(self) -> int | None:
        """The running postmaster's pid, from postmaster.pid; None if it is gone (or the pid was reused)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().split("\n")
            pid, started_at = int(lines[0]), float(lines[2])
        except (FileNotFoundError, PermissionError, ValueError, IndexError):
            return None
        return pid if is_postmaster(pid, started_at) else None

    def wait_for_crash_cleanup(self, timeout_s: float = CRASH_CLEANUP_TIMEOUT_S) -> bool:
        """After a crash, wait until no backend runs in the data directory and the dead postmaster is reaped.

        PostgreSQL refuses to start while the pid of postmaster.pid exists, even
        as a zombie ("lock file already exists"), or while old backends still
        hold the shared memory. Returns False if they are still there at the deadline.
        """
        data_dir = self.data_dir.resolve()
        deadline = time.monotonic() + timeout_s
        while processes_in(data_dir) or self._stale_postmaster():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    def _stale_postmaster(self) -> bool:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, PermissionError, ValueError):
            return False
        return Path(f"/proc/{pid}").exists()

    def restart_after_crash(self, cleanup_timeout_s: float = CRASH_CLEANUP_TIMEOUT_S) -> None:
        """Start a server that died, once what it left behind is gone; raises if it cannot start."""
        if not self.wait_for_crash_cleanup(cleanup_timeout_s):
            raise RuntimeError(f"PostgreSQL in {self.data_dir}: backends or the dead postmaster still there "
                               f"after {cleanup_timeout_s:.0f}s")
        self.start()

    def create_database(self, name: str) -> None:
        """Create a database unless it exists (names are our own identifiers)."""
        if not name.isidentifier():
            raise ValueError(f"bad database name {name!r}")
        psql = self._psql("postgres")
        exists = subprocess.run(
            [*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
            check=True, capture_output=True, text=True, env=self._client_env(),
        ).stdout.strip()
        if exists != "1":
            subprocess.run([*psql, "-c", f"CREATE DATABASE {name}"], check=True, stdout=subprocess.DEVNULL,
                           env=self._client_env())

    @staticmethod
    def _give_to_pg_user(path: Path) -> None:
        """The data directory belongs to the server's user; its parents stay traversable."""
        os.chmod(path, 0o700)
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(PG_USER)
        os.chown(path, user.pw_uid, user.pw_gid)
        for parent in path.parents:
            if parent.stat().st_mode & 0o005 != 0o005:
                raise PermissionError(f"{parent} must be world-traversable for the {PG_USER} user (chmod o+rx)")
            if parent == Path("/"):
                break


def process_started_at(pid: int) -> float | None:
    """When ``pid`` started, in seconds since the epoch; None if it is gone or a zombie."""
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    with open("/proc/stat") as stat:
        boot = next(float(line.split()[1]) for line in stat if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def is_postmaster(pid: int, started_at: float) -> bool:
    """Whether ``pid`` is alive and started when postmaster.pid says the postmaster did."""
    actual = process_started_at(pid)
    return actual is not None and abs(actual - started_at) <= PID_START_SLACK_S


def processes_in(directory: Path) -> list[int]:
    """Pids whose working directory is ``directory``: a server's postmaster and backends work in its data directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(os.readlink(proc / "cwd")) == directory:
                    found.append(int(proc.name))
    return found
