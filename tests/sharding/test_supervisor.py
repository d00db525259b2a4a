"""The restart policy of ``run``, on a simulated clock: doubling backoff, its ceiling and reset, stops on purpose.

No process is started: a part is a fake whose restart hands out the next
pid. tests/e2e/test_supervisor.py checks the same policy on real processes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sharding.config import Shard, Topology, save
from sharding.local.cluster import LocalCluster
from sharding.local.settings import ClusterSettings
from sharding.local.supervisor import Observed, RestartPolicy, Supervisor, restart_counts

POLICY = RestartPolicy(first_backoff_s=0.5, max_backoff_s=4.0, stable_after_s=10.0)
TOPOLOGY = Topology(shards=(Shard("a", ("127.0.0.1:1",), "postgresql://postgres@127.0.0.1:2/reactions"),))
# Past any real pid_max: the supervisor asks how these "exited" and must find nothing.
FAKE_PID = 10**8
STEP_S = 0.05


class FakePart:
    """A part that is down whenever the test says; each restart is a new pid at the simulated time."""

    def __init__(self) -> None:
        self.pid, self.up, self.now = FAKE_PID, True, 0.0
        self.restarted_at: list[float] = []
        self.fail_next = 0

    def observed(self, wanted: bool = True) -> Observed:
        return Observed("writer-a", self.pid if self.up else None, self.pid, lambda _t: wanted, self.restart)

    def restart(self) -> int:
        self.restarted_at.append(round(self.now, 2))
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("port in use")
        self.pid, self.up = self.pid + 1, True
        return self.pid


@pytest.fixture
def supervisor(tmp_path: Path) -> Supervisor:
    cluster = LocalCluster(ClusterSettings(data_dir=tmp_path))
    save(TOPOLOGY, cluster.shards_file)
    return Supervisor(cluster, POLICY)


def run_for(supervisor: Supervisor, part: FakePart, seconds: float, *, crash: bool = True,
            wanted: bool = True) -> None:
    """Advance the clock; with ``crash``, the part dies again as soon as it has been seen up."""
    end = part.now + seconds
    while part.now < end:
        supervisor.tend(part.observed(wanted), TOPOLOGY, part.now)
        if crash:
            part.up = False
        part.now = round(part.now + STEP_S, 2)


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 2) for a, b in itertools.pairwise(times)]


def test_a_crash_loop_backs_off_doubling_up_to_the_ceiling(supervisor: Supervisor, tmp_path: Path) -> None:
    part = FakePart()
    run_for(supervisor, part, 20.0)
    # First restart 0.5 s after the crash was seen; each next one waits twice as long, at most 4 s.
    assert part.restarted_at[0] == pytest.approx(0.55)
    assert gaps(part.restarted_at)[:5] == pytest.approx([1.05, 2.05, 4.05, 4.05, 4.05])
    supervisor.save()
    assert restart_counts(tmp_path)["writer-a"]["restarts"] == len(part.restarted_at)


def test_the_backoff_starts_over_once_the_part_has_stayed_up(supervisor: Supervisor) -> None:
    part = FakePart()
    run_for(supervisor, part, 8.0)
    assert supervisor.states["writer-a"].backoff_s == POLICY.max_backoff_s
    # Its pending restart comes at most max_backoff_s later; then it stays up past stable_after_s.
    run_for(supervisor, part, POLICY.max_backoff_s + POLICY.stable_after_s + 1, crash=False)
    part.up, crashed_at = False, part.now
    run_for(supervisor, part, 2.0, crash=False)
    assert part.restarted_at[-1] - crashed_at == pytest.approx(POLICY.first_backoff_s)


def test_a_failed_start_is_retried_with_the_next_backoff(supervisor: Supervisor) -> None:
    part = FakePart()
    part.fail_next = 2
    run_for(supervisor, part, 0.1)
    part.up = False
    run_for(supervisor, part, 5.0, crash=False)
    assert gaps(part.restarted_at[:3]) == pytest.approx([1.0, 2.0])
    assert part.up and supervisor.states["writer-a"].restarts == 3


def test_a_part_stopped_on_purpose_is_not_restarted(supervisor: Supervisor) -> None:
    part = FakePart()
    run_for(supervisor, part, 0.1)
    part.up = False
    run_for(supervisor, part, 0.2)  # seen down: a restart is due in 0.5 s ...
    run_for(supervisor, part, 5.0, wanted=False)  # ... when the shard file no longer lists it
    assert part.restarted_at == []
