"""What ``run`` does while the cluster is up: restart a writer, an aggregator or a shard's PostgreSQL that died.

The policy is a restart policy's (systemd's ``Restart=always`` with a
doubling ``RestartSec``, compose's ``unless-stopped``): a part that dies is
started again after a backoff that doubles with each consecutive crash, up
to a ceiling, and goes back to the first step once the part has stayed up
a while. A part stopped on purpose is never restarted. Only the cluster's
own commands stop parts on purpose, and each first takes the part out of
the shard file (``retire-shard``) or never put it there (``add-shard`` and
``add-aggregator`` rolling back), so a part is wanted exactly when the shard
file lists it: a writer of an active shard, an aggregator, every shard's
PostgreSQL. ``run``'s own stop happens after the loop has ended.

Restart counts go to DATA_DIR/restarts.json for ``status``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sharding.config import ConfigError, Topology
from sharding.local.cluster import LocalCluster, port_of
from sharding.local.processes import ProcessRecord, alive, describe_exit, reap_adopted
from sharding.local.signals import SignalQueue

# How often ``run`` looks at its parts: a crash is noticed within this, and a
# look costs a few small reads of /proc and of the shard file.
SUPERVISE_PERIOD_S = 0.25
RESTARTS_FILE = "restarts.json"
# After a shard file that does not parse, look again this much later (the warning repeats at this pace).
CONFIG_RETRY_S = 5.0


@dataclass(frozen=True)
class RestartPolicy:
    # The first restart comes quickly: most crashes are one-off (a kill, an OOM).
    first_backoff_s: float = 0.5
    # A part that keeps crashing is retried at least this often, never hammered.
    max_backoff_s: float = 30.0
    # Up this long counts as healthy again: the next crash starts from the first backoff.
    stable_after_s: float = 60.0


@dataclass
class PartState:
    """What the supervisor knows of one part across its restarts."""

    backoff_s: float
    pid: int | None = None
    up_since: float | None = None
    due_at: float | None = None  # when the pending restart is due; None if none is pending
    restarts: int = 0
    last_exit: str = ""
    last_restart: str = ""  # wall-clock time of the last restart, for people
    waiting_logged: bool = field(default=False, repr=False)


@dataclass(frozen=True)
class Observed:
    name: str
    pid: int | None  # the running process, None when it is down
    last_pid: int | None  # the process last known to be this part (whose exit is reported)
    wanted: Callable[[Topology], bool]  # asked with a shard file read after the part was seen down
    restart: Callable[[], int]  # starts the part again and returns its pid
    needs_admin_lock: bool = False


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Supervisor:
    def __init__(self, cluster: LocalCluster, policy: RestartPolicy | None = None) -> None:
        self.cluster = cluster
        self.policy = policy or RestartPolicy()
        self.states: dict[str, PartState] = {}
        self.reported: set[tuple[str, int]] = set()
        self.saved: str | None = None
        self.save()

    def tick(self, now: float) -> None:
        """Look at every part once; schedule, or carry out, the restarts that are due."""
        reap_adopted()
        observed = self.observe()
        topology = self.cluster.running_topology()  # read after the parts were looked at (see wanted)
        for part in observed:
            self.tend(part, topology, now)
        for gone in set(self.states) - {part.name for part in observed}:
            del self.states[gone]
        self.save()

    def observe(self) -> list[Observed]:
        cluster, found = self.cluster, []
        for shard in cluster.running_topology().shards:
            pg = cluster.postgres(shard)
            pid = pg.pid()
            found.append(Observed(f"postgres-{shard.name}", pid, pid, wanted_postgres(shard.name),
                                  restart_postgres(cluster, shard.name)))
        for record in cluster.registry.all():
            pid = record.pid if alive(record) else None
            if record.role == "writer":
                found.append(Observed(record.name, pid, record.pid, wanted_writer(record),
                                      restart_writer(cluster, record), needs_admin_lock=True))
            elif record.role == "aggregator":
                found.append(Observed(record.name, pid, record.pid, wanted_aggregator(record),
                                      restart_aggregator(cluster, record)))
            elif pid is None and (record.name, record.pid) not in self.reported:
                self.reported.add((record.name, record.pid))
                log(f"warning: {record.name} (pid {record.pid}) exited; see {record.log} (not restarted)")
        return found

    def tend(self, part: Observed, topology: Topology, now: float) -> None:
        state = self.states.setdefault(part.name, PartState(backoff_s=self.policy.first_backoff_s))
        if part.pid is not None:
            if part.pid != state.pid or state.up_since is None:
                state.pid, state.up_since = part.pid, now
            elif now - state.up_since >= self.policy.stable_after_s:
                state.backoff_s = self.policy.first_backoff_s
            state.due_at = None
            return
        state.up_since = None
        if not part.wanted(topology):
            state.due_at = None  # stopped on purpose: no restart, pending or not
            return
        if state.due_at is None:
            state.last_exit = describe_exit(part.last_pid or state.pid)
            state.due_at = now + state.backoff_s
            log(f"{part.name} (pid {part.last_pid or state.pid}) {state.last_exit}; restart {state.restarts + 1} "
                f"in {state.backoff_s:.1f}s")
        elif now >= state.due_at:
            self.restart(part, state, now)

    def restart(self, part: Observed, state: PartState, now: float) -> None:
        with self.cluster.admin_lock_if_free() as free:
            if part.needs_admin_lock and not free:
                if not state.waiting_logged:
                    log(f"{part.name}: a topology change is in progress; restarting once it is done")
                state.waiting_logged = True
                return
            # A topology change may have finished since the tick read the shard file.
            if not part.wanted(self.cluster.running_topology()):
                state.due_at = None
                return
            state.waiting_logged = False
            state.restarts += 1
            state.last_restart = time.strftime("%H:%M:%S")
            state.backoff_s, backoff = min(2 * state.backoff_s, self.policy.max_backoff_s), state.backoff_s
            try:
                pid = part.restart()
            except Exception as exc:  # any failure to start is one more crash: retried with backoff
                state.due_at = now + state.backoff_s
                log(f"{part.name}: restart {state.restarts} failed ({exc}); next attempt in {state.backoff_s:.1f}s")
                return
        state.pid, state.up_since, state.due_at = pid, now, None
        log(f"{part.name} restarted: pid {pid} (restart {state.restarts}, {backoff:.1f}s after it {state.last_exit}); "
            f"next backoff {state.backoff_s:.1f}s")

    def save(self) -> None:
        """Restart counts for ``status`` (another process), replaced atomically."""
        counts = {name: {"restarts": s.restarts, "last_exit": s.last_exit, "last_restart": s.last_restart}
                  for name, s in self.states.items() if s.restarts}
        text = json.dumps(counts, sort_keys=True)
        if text == self.saved:
            return  # a tick with no restart writes nothing
        path = self.cluster.root / RESTARTS_FILE
        tmp = path.with_suffix(".new")
        tmp.write_text(text)
        os.replace(tmp, path)
        self.saved = text


def supervise(cluster: LocalCluster, signals: SignalQueue, policy: RestartPolicy | None = None) -> None:
    """Tend the parts until a stop signal arrives; then raise ``Shutdown`` (the caller stops everything)."""
    supervisor = Supervisor(cluster, policy)
    while True:
        signals.check()
        try:
            supervisor.tick(time.monotonic())
        except ConfigError as exc:  # someone's hand edit: keep the cluster up, say so, look again
            log(f"warning: cannot read {cluster.shards_file} ({exc}); nothing is restarted until it is fixed")
            signals.wait(CONFIG_RETRY_S)
        signals.wait(SUPERVISE_PERIOD_S)


def restart_counts(root: Path) -> dict[str, dict[str, object]]:
    """What the running (or last) ``run`` restarted, by part name."""
    try:
        counts: dict[str, dict[str, object]] = json.loads((root / RESTARTS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return counts


# -- what each kind of part needs ------------------------------------------------


def wanted_postgres(shard: str) -> Callable[[Topology], bool]:
    # Retired shards are still read: their PostgreSQL runs until ``run`` stops.
    return lambda topology: any(s.name == shard for s in topology.shards)


def wanted_writer(record: ProcessRecord) -> Callable[[Topology], bool]:
    return lambda topology: any(s.name == record.shard and record.address in s.writers for s in topology.active_shards)


def wanted_aggregator(record: ProcessRecord) -> Callable[[Topology], bool]:
    return lambda topology: any(port_of(a) == record.port for a in topology.aggregators)


def restart_postgres(cluster: LocalCluster, shard: str) -> Callable[[], int]:
    def restart() -> int:
        pg = cluster.postgres(cluster.running_topology().shard(shard))
        pg.restart_after_crash()
        pid = pg.pid()
        if pid is None:
            raise RuntimeError(f"PostgreSQL of shard {shard} exited right after starting; see {pg.log_file}")
        return pid
    return restart


def restart_writer(cluster: LocalCluster, record: ProcessRecord) -> Callable[[], int]:
    def restart() -> int:
        shard = cluster.running_topology().shard(record.shard or "")
        return cluster.start_writer(shard, shard.writers.index(record.address)).pid
    return restart


def restart_aggregator(cluster: LocalCluster, record: ProcessRecord) -> Callable[[], int]:
    def restart() -> int:
        index = int(record.name.rsplit("-", 1)[1]) - 1
        return cluster.start_aggregator(index, record.address).pid
    return restart
