"""Group commit logic, on its own: batches form while a commit is in flight."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

import pytest

from common.events import Event, Reaction
from writer.batcher import (
    CommitFailed,
    GroupCommitter,
    NotStored,
    OutcomeUnknown,
    Overloaded,
    ShuttingDown,
    TooLate,
)


def reaction(i: int) -> Reaction:
    return Reaction(ts=i, hour=0, username=f"u{i}", event=Event.CLICK)


class GatedCommits:
    """Records each batch; every commit waits until the test opens the gate."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.deadlines: list[float] = []
        self.gate = asyncio.Event()
        self.fail = False

    async def __call__(self, batch: Sequence[Reaction], deadline: float = math.inf) -> None:
        self.batches.append([r.ts for r in batch])
        self.deadlines.append(deadline)
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("commit failed")


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def committer(commits: GatedCommits, max_queue_wait_s: float = 60.0, max_events: int = 500,
              queue_max: int = 10_000) -> GroupCommitter:
    c = GroupCommitter(commits, max_events=max_events, max_wait_s=0.002, queue_max=queue_max, flushers=1,
                       max_queue_wait_s=max_queue_wait_s)
    c.start()
    return c


async def test_requests_arriving_during_a_commit_share_the_next_batch() -> None:
    commits = GatedCommits()
    c = committer(commits)
    first = asyncio.ensure_future(c.submit(reaction(0)))
    await settle()
    rest = [asyncio.ensure_future(c.submit(reaction(i))) for i in range(1, 101)]
    await settle()
    commits.gate.set()
    await asyncio.gather(first, *rest)
    assert commits.batches == [[0], list(range(1, 101))]
    await c.close()


async def test_batches_are_capped_in_size() -> None:
    commits = GatedCommits()
    commits.gate.set()
    c = committer(commits, max_events=7)
    await asyncio.gather(*(c.submit(reaction(i)) for i in range(20)))
    assert all(len(b) <= 7 for b in commits.batches)
    assert sorted(ts for b in commits.batches for ts in b) == list(range(20))
    await c.close()


async def test_a_failed_commit_fails_every_request_of_its_batch() -> None:
    commits = GatedCommits()
    commits.fail = True
    commits.gate.set()
    c = committer(commits)
    results = await asyncio.gather(*(c.submit(reaction(i)) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, CommitFailed) for r in results)
    # An error the commit did not classify may have happened after the commit was sent.
    assert all(isinstance(r, OutcomeUnknown) for r in results)
    assert c.pending == 0
    await c.close()


async def test_a_commit_that_says_not_stored_answers_not_stored() -> None:
    commits = GatedCommits()
    commits.gate.set()

    async def rolled_back(batch: Sequence[Reaction], deadline: float = math.inf) -> None:
        raise NotStored("rolled back")

    c = GroupCommitter(rolled_back, max_events=10, max_wait_s=0.002, queue_max=10, flushers=1)
    c.start()
    results = await asyncio.gather(*(c.submit(reaction(i)) for i in range(3)), return_exceptions=True)
    assert all(type(r) is NotStored for r in results)
    await c.close()


async def test_events_that_waited_too_long_are_refused_unsent() -> None:
    commits = GatedCommits()
    c = committer(commits, max_queue_wait_s=0.05)
    blocker = asyncio.ensure_future(c.submit(reaction(0)))
    await settle()
    late = [asyncio.ensure_future(c.submit(reaction(i))) for i in range(1, 4)]
    await asyncio.sleep(0.1)  # longer than the queue-wait bound: the point of the test
    fresh = asyncio.ensure_future(c.submit(reaction(4)))
    await settle()
    commits.gate.set()
    await asyncio.gather(blocker, fresh)
    results = await asyncio.gather(*late, return_exceptions=True)
    assert all(isinstance(r, NotStored) for r in results)
    assert commits.batches == [[0], [4]], "the refused events were never sent"
    assert c.pending == 0
    await c.close()


async def test_events_past_their_deadline_are_refused_unsent_and_a_batch_carries_the_earliest() -> None:
    """README, Invariants 8: a write is committed by its deadline or never."""
    commits = GatedCommits()
    c = committer(commits)
    blocker = asyncio.ensure_future(c.submit(reaction(0)))
    await settle()
    now = time.time()
    late = asyncio.ensure_future(c.submit(reaction(1), now + 0.05))
    kept = [asyncio.ensure_future(c.submit(reaction(i), now + 60 + i)) for i in (2, 3)]
    await asyncio.sleep(0.1)  # past the first one's deadline: the point of the test
    commits.gate.set()
    await asyncio.gather(blocker, *kept)
    with pytest.raises(TooLate, match="past its deadline"):
        await late
    assert commits.batches == [[0], [2, 3]], "the late event was never sent"
    assert commits.deadlines == [math.inf, pytest.approx(now + 62)]
    with pytest.raises(TooLate):
        await c.submit(reaction(4), time.time() - 1)  # already late: refused at once
    assert c.pending == 0
    await c.close()


async def test_refusing_answers_the_open_batch_and_new_events_at_once() -> None:
    commits = GatedCommits()
    c = committer(commits)
    blocker = asyncio.ensure_future(c.submit(reaction(0)))
    await settle()
    waiting = [asyncio.ensure_future(c.submit(reaction(i))) for i in range(1, 4)]
    await settle()
    c.refuse("database down")
    with pytest.raises(NotStored, match="database down"):
        await c.submit(reaction(9))
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, NotStored) for r in results)
    c.resume()
    commits.gate.set()
    await asyncio.gather(blocker, c.submit(reaction(5)))
    assert commits.batches == [[0], [5]]
    assert c.pending == 0
    await c.close()


async def test_a_cancelled_request_does_not_disturb_its_batch() -> None:
    commits = GatedCommits()
    c = committer(commits)
    blocker = asyncio.ensure_future(c.submit(reaction(0)))
    await settle()
    leaving, staying = (asyncio.ensure_future(c.submit(reaction(i))) for i in (1, 2))
    await settle()
    leaving.cancel()
    commits.gate.set()
    await asyncio.gather(blocker, staying)
    assert leaving.cancelled()
    assert commits.batches == [[0], [1, 2]]
    assert c.pending == 0
    await c.close()


async def test_full_queue_refuses_and_close_drains() -> None:
    commits = GatedCommits()
    c = committer(commits, queue_max=3)
    accepted = [asyncio.ensure_future(c.submit(reaction(i))) for i in range(3)]
    await settle()
    with pytest.raises(Overloaded):
        await c.submit(reaction(3))
    closing = asyncio.ensure_future(c.close())
    await settle()
    with pytest.raises(ShuttingDown):
        await c.submit(reaction(4))
    commits.gate.set()
    await asyncio.gather(closing, *accepted)
    assert sorted(ts for b in commits.batches for ts in b) == [0, 1, 2]


class InstantCommits:
    """Records each batch; each commit takes ``seconds``."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.seconds = seconds

    async def __call__(self, batch: Sequence[Reaction], deadline: float = math.inf) -> None:
        self.batches.append([r.ts for r in batch])
        await asyncio.sleep(self.seconds)


async def closed_loop_clients(c: GroupCommitter, clients: int, requests_each: int, think_s: float) -> None:
    """Client k sends its next event ``think_s * k`` after its last one was answered."""
    async def client(k: int) -> None:
        for i in range(requests_each):
            await c.submit(reaction(k * 1000 + i))
            await asyncio.sleep(think_s * k)
    await asyncio.gather(*(client(k) for k in range(clients)))


async def test_the_commit_window_gathers_the_clients_just_answered() -> None:
    # Eight clients in a closed loop that come back 0 to 7 ms after their
    # answer, and commits of 3 ms: without a window each commit takes whatever
    # arrived during the last one, and the clients split into small batches;
    # with a 50 ms window each batch waits for all of them.
    sizes = {}
    for window_s in (0.0, 0.05):
        commits = InstantCommits(seconds=0.003)
        c = GroupCommitter(commits, max_events=500, max_wait_s=0.002, queue_max=100, flushers=1, window_s=window_s)
        c.start()
        await closed_loop_clients(c, clients=8, requests_each=10, think_s=0.001)
        await c.close()
        committed = sorted(ts for b in commits.batches for ts in b)
        assert committed == sorted(k * 1000 + i for k in range(8) for i in range(10))
        sizes[window_s] = len(commits.batches)
    assert sizes[0.05] <= 15, f"80 events from 8 clients took {sizes[0.05]} commits with the window"
    assert sizes[0.0] > 2 * sizes[0.05], sizes


async def test_the_commit_window_never_delays_a_lone_client() -> None:
    commits = InstantCommits()
    c = GroupCommitter(commits, max_events=500, max_wait_s=0.002, queue_max=100, flushers=1, window_s=1.0)
    c.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await closed_loop_clients(c, clients=1, requests_each=5, think_s=0)
    # A window spent on each of the 5 events would take 5 s; one spent by mistake, 1 s.
    assert loop.time() - started < 0.5
    assert commits.batches == [[i] for i in range(5)]
    await c.close()


async def test_the_commit_window_is_bounded_when_clients_do_not_come_back() -> None:
    commits = InstantCommits()
    c = GroupCommitter(commits, max_events=500, max_wait_s=0.002, queue_max=100, flushers=1, window_s=0.05)
    c.start()
    await asyncio.gather(*(c.submit(reaction(i)) for i in range(6)))  # the last commit ended with 6 waiting
    loop = asyncio.get_running_loop()
    started = loop.time()
    await c.submit(reaction(6))  # alone now: waits for the 5 others at most the window
    waited = loop.time() - started
    assert 0.04 <= waited < 1.0, waited
    assert commits.batches[-1] == [6]
    await c.close()


async def test_after_a_refusal_the_window_waits_for_nobody() -> None:
    # The last commit ended with 3 events waiting: the window waits for 3. The
    # open batch is refused meanwhile (its clients go elsewhere): the first
    # event after it must not wait a window for the clients of before.
    commits = InstantCommits()
    c = GroupCommitter(commits, max_events=500, max_wait_s=0.002, queue_max=100, flushers=1, window_s=5.0)
    c.start()
    await asyncio.gather(*(c.submit(reaction(i)) for i in range(3)))
    lingering = asyncio.ensure_future(c.submit(reaction(3)))
    await settle()
    c.refuse("the database is down")
    with pytest.raises(NotStored):
        await lingering
    c.resume()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await c.submit(reaction(4))
    assert loop.time() - started < 2.5, "the first event after the refusal waited out a window"
    await c.close()
