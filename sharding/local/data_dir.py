"""DATA_DIR: where a local cluster keeps everything, and the locks that say who may change it.

Everything lives under DATA_DIR::

    shards.json       the shard file: the user edits it, ``apply`` brings the cluster to it
    applied.json      the topology the cluster was last brought to (by ``run`` or ``apply``):
                      nginx is rendered from it, the aggregators read it (on another host, by URL)
    identities.json   each shard's database identity as ``apply`` checked it, and removed names
    entry             present on an entry host (``entry``): nginx also serves applied.json on PORT+1
    pgpass            the PostgreSQL password (libpq passfile, mode 0600; PASSFILE elsewhere)
    cluster.lock      held (flock) by the running ``run``; holds its pid
    admin.lock        serialises add-shard / retire-shard
    run/*.json        one record per process (see processes.py)
    logs/*.log        writers' and aggregators' output
    pg/<shard>/       each shard's PostgreSQL data directory (and server.log)
    nginx/            nginx.conf, pid, access and error logs, temp files
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from sharding.config import Topology, load, save
from sharding.local.processes import Registry


class ClusterError(RuntimeError):
    """Something the user must act on; the message says what."""


class DataDir:
    """A DATA_DIR's files, its topology files, and its run and admin locks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.shards_file = self.root / "shards.json"
        self.applied_file = self.root / "applied.json"
        self.identities_file = self.root / "identities.json"
        self.entry_marker = self.root / "entry"
        self.registry = Registry(self.root / "run")
        self.nginx_dir = self.root / "nginx"
        self.nginx_conf = self.nginx_dir / "nginx.conf"
        self.prometheus_conf = self.root / "prometheus.yml"
        self._lock: IO[str] | None = None

    # -- locks ---------------------------------------------------------------

    def acquire_run_lock(self) -> None:
        """Become the one ``run`` of this DATA_DIR, or say who already is."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # PostgreSQL's user must traverse it
        handle = open(self.root / "cluster.lock", "a+")  # noqa: SIM115 (held while running)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise ClusterError(
                f"a cluster is already running from DATA_DIR={self.root} (run pid {owner}). "
                f"Stop it with Ctrl-C in its terminal or `kill {owner}`, or use another DATA_DIR and PORT."
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def release_run_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def running_pid(self) -> int | None:
        """The pid of the ``run`` holding this DATA_DIR, None if there is none."""
        try:
            handle = open(self.root / "cluster.lock")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            return None
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = handle.read().strip()
                return int(text) if text.isdigit() else -1
            return None

    @contextmanager
    def admin_lock(self) -> Iterator[None]:
        """One topology change at a time."""
        with open(self.root / "admin.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @contextmanager
    def admin_lock_if_free(self) -> Iterator[bool]:
        """The admin lock if no topology change holds it (yields True), else yields False at once."""
        with open(self.root / "admin.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True

    # -- topology files ------------------------------------------------------

    def running_topology(self) -> Topology:
        """What the running cluster was last brought to; the shard file of a DATA_DIR made before apply."""
        return load(self.applied_file if self.applied_file.exists() else self.shards_file)

    def serves_topology(self) -> bool:
        """An entry host's nginx serves the shard file; ``make run``'s aggregators read it from disk."""
        return self.entry_marker.exists()

    def save_started(self, topology: Topology) -> None:
        """``run`` starts with ``topology``: applied; the shard file too, unless it holds edits not applied yet."""
        pending = self.shards_file.exists() and self.applied_file.exists() and \
            load(self.shards_file) != load(self.applied_file)
        save(topology, self.applied_file)
        if pending:
            print(f"note: {self.shards_file} has edits that were not applied; `make apply` applies them")
        else:
            save(topology, self.shards_file)
