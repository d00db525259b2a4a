"""A batch split by shard and each part committed: here, or by the writer of its shard.

Each event goes where a single POST of its user would land right now: the
writer nginx's ring picks for the user's canonical key (sharding/placement.py).
A part for this writer's own shard is committed here (writer/batch_db.py);
any other part is sent to the writer the ring picked, over the internal path
(writer/part_wire.py), which commits it on its own shard under its own
health, gate and refusal rules. Parts go out at once, in parallel.

A part whose writer refused the connection (or did not accept it within
``REACTIONS_BATCH_CONNECT_TIMEOUT_MS``) was not sent: as nginx does, its
events walk on along the ring past that writer (marked down for nginx's
fail_timeout), as long as the batch is younger than that same timeout (as
nginx's proxy_next_upstream_timeout: attempts start early, so that every
batch is answered within its bound), unless the request asked for strict placement
(``X-Reactions-Placement: strict``): then the part is not stored, so that a
retry of a part in doubt never lands on another shard.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from common.batches import Batch
from writer.batch_db import KeyReused, Part, PartCommitted
from writer.batcher import NotStored, OutcomeUnknown
from writer.part_wire import DIGEST_HEADER, PART_PATH, encode_part
from writer.settle import STAMP_HEADER
from writer.topology import WriterTopology

# The placement of a part on this writer's own shard.
HERE = ""


class Outcome(enum.Enum):
    COMMITTED = "committed"
    NOT_STORED = "not stored"
    UNKNOWN = "in doubt"
    KEY_REUSED = "key reused"


@dataclass(frozen=True)
class PartResult:
    where: str  # the writer the part went to, or HERE
    events: int
    outcome: Outcome
    committed: PartCommitted | None = None
    reason: str = ""


class NotSent(Exception):
    """The part's writer could not be connected to: nothing was sent."""


@dataclass(frozen=True)
class Request:
    """What every part of one batch request shares."""

    key: str
    digest: bytes
    strict: bool
    sent_stamp: str | None  # nginx's X-Reactions-Sent, passed on with each part (writer/settle.py)
    deadline: float  # the last moment a part may commit (seconds since the epoch; inf: none)
    started: float = field(default_factory=time.monotonic)


CommitHere = Callable[[Request, Part], Awaitable[PartCommitted]]


def columns(batch: Batch, indexes: list[int]) -> Part:
    return Part([i + 1 for i in indexes], [batch.ts[i] for i in indexes], [batch.hours[i] for i in indexes],
                [batch.users[i] for i in indexes], [batch.events[i] for i in indexes])


class Dispatcher:
    """Places a batch's events and commits its parts; one per writer."""

    def __init__(self, topology: WriterTopology, session: aiohttp.ClientSession, commit_here: CommitHere,
                 connect_timeout_s: float, forward_timeout_s: float) -> None:
        self._topology = topology
        self._session = session
        self._commit_here = commit_here
        self._timeout = aiohttp.ClientTimeout(total=forward_timeout_s, sock_connect=connect_timeout_s)
        self._failover_window_s = connect_timeout_s

    async def commit(self, request: Request, batch: Batch) -> list[PartResult]:
        return await self._place(request, batch, list(range(len(batch))), frozenset())

    def waiting_for(self) -> str | None:
        """What batches wait for (the topology not read yet), for /readyz; None when they can be placed."""
        return self._topology.waiting.describe() if self._topology.unknown else None

    def split(self, batch: Batch, indexes: list[int], down: frozenset[str],
              strict: bool = False) -> dict[str, list[int]]:
        """Event indexes by the writer they go to (HERE for this writer's shard); LookupError if all are down.

        Strict placement ignores which writers are known to be down: every event goes to its ring writer.
        """
        placement = self._topology.placement
        if placement is None:
            if self._topology.unknown:
                raise LookupError("the topology has not been read yet")
            if strict:  # without the ring, this writer cannot know where each user's part belongs
                raise LookupError("strict placement needs the topology: this writer has no "
                                  "REACTIONS_SHARDS_FILE or REACTIONS_SHARDS_URL")
            return {HERE: indexes}
        down = frozenset() if strict else down | self._topology.down()
        groups: dict[str, list[int]] = defaultdict(list)
        target_of: dict[str, str] = {}  # a user's events come in bunches: each user is placed once
        for i in indexes:
            user = batch.users[i]
            target = target_of.get(user)
            if target is None:
                writer = placement.writer(user, down)
                target = target_of[user] = HERE if self._topology.is_own(placement.shard_of[writer]) else writer
            groups[target].append(i)
        return groups

    async def _place(self, request: Request, batch: Batch, indexes: list[int],
                     down: frozenset[str]) -> list[PartResult]:
        try:
            groups = self.split(batch, indexes, down, request.strict)
        except LookupError as exc:  # topology not read, strict without one, or every writer down
            return [PartResult("", len(indexes), Outcome.NOT_STORED, reason=str(exc))]
        sent = await asyncio.gather(*(self._send(request, batch, writer, group, down)
                                      for writer, group in groups.items()))
        return [result for results in sent for result in results]

    async def _send(self, request: Request, batch: Batch, writer: str, indexes: list[int],
                    down: frozenset[str]) -> list[PartResult]:
        part = columns(batch, indexes)
        try:
            if writer == HERE:
                committed = await self._commit_here(request, part)
            else:
                committed = await self._forward(request, writer, part)
        except NotSent as exc:
            self._topology.mark_down(writer)
            if request.strict or time.monotonic() - request.started > self._failover_window_s:
                return [PartResult(writer, len(part), Outcome.NOT_STORED, reason=str(exc))]
            return await self._place(request, batch, indexes, down | {writer})
        except KeyReused as exc:
            return [PartResult(writer, len(part), Outcome.KEY_REUSED, reason=str(exc))]
        except NotStored as exc:
            return [PartResult(writer, len(part), Outcome.NOT_STORED, reason=str(exc))]
        except OutcomeUnknown as exc:
            return [PartResult(writer, len(part), Outcome.UNKNOWN, reason=str(exc))]
        return [PartResult(writer, len(part), Outcome.COMMITTED, committed)]

    async def _forward(self, request: Request, writer: str, part: Part) -> PartCommitted:
        headers = {"Idempotency-Key": request.key, DIGEST_HEADER: request.digest.hex(), "Content-Type": "text/csv"}
        if request.sent_stamp is not None:
            headers[STAMP_HEADER] = request.sent_stamp
        try:
            async with self._session.post(f"http://{writer}{PART_PATH}", data=encode_part(part), headers=headers,
                                          timeout=self._timeout) as resp:
                text = await resp.text()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise NotSent(f"writer {writer} could not be reached ({type(exc).__name__})") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise OutcomeUnknown(f"writer {writer} did not answer ({type(exc).__name__})") from exc
        return part_answer(writer, resp.status, text)


def part_answer(writer: str, status: int, text: str) -> PartCommitted:
    """What another writer's answer for a part means."""
    reason = f"writer {writer}: {text.strip()}"
    if status == 200:
        fields = dict(line.split(",") for line in text.splitlines())
        return PartCommitted(int(fields["stored"]), int(fields["already_present"]))
    if status == 422:
        raise KeyReused(reason)
    if status == 503 or 400 <= status < 500:  # refused before its commit (or rolled back), or never taken
        raise NotStored(reason)
    raise OutcomeUnknown(reason)
