"""One batch to the entry point's ``POST /analytics/batch``, retried until its answer is final.

Every try carries the batch's own key and the same body, and asks for strict
placement (``X-Reactions-Placement: strict``): no part is placed on another
shard than its ring shard, so a part whose earlier try is in doubt (a frozen
shard may still commit it) is completed on that same shard, where its key's
record makes the retry commit only what is missing. Final answers: 200
(stored), 400 and 422 (refused, nothing of this try stored). A 503, a 504 or
no answer is retried with backoff; a batch that has no final answer after
``give_up_s`` is given up, and said so.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from sharding.importer.batches import Batch
from sharding.importer.settings import ImportSettings

PATH = "/analytics/batch"
OUTCOME_HEADER = "X-Reactions-Outcome"
PLACEMENT_HEADER = "X-Reactions-Placement"
# Answers after which the same try may simply be repeated: not stored (503), in doubt (504, 502, 500),
# or told to slow down (429, 408). Any other answer but 200, 400 and 422 stops the import.
RETRIED = frozenset({408, 429, 500, 502, 503, 504})
REFUSED = frozenset({400, 422})
# How much of an answer's text a report quotes.
REASON_CHARS = 200


class FatalAnswer(Exception):
    """An answer that no retry can change (a wrong URL, a batch over the limits): the import stops."""


@dataclass(frozen=True)
class BatchResult:
    """A batch's final state: stored (with the answer's counts), refused (the reason), or given up (the last try)."""

    batch: Batch
    stored: int = 0
    already_present: int = 0
    refused: str | None = None
    gave_up: str | None = None
    tries: int = 1


Reporter = Callable[[Batch, int, str, float], None]
"""Called before each retry with the batch, the tries so far, why, and the wait."""


def short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= REASON_CHARS else line[:REASON_CHARS] + "…"


def counts(batch: Batch, body: str) -> BatchResult:
    """The 200 body ``events,N\\nstored,N\\nalready_present,N\\n``, checked against the batch."""
    try:
        fields = dict(line.split(",", 1) for line in body.splitlines() if line)
        events, stored, present = int(fields["events"]), int(fields["stored"]), int(fields["already_present"])
    except (KeyError, ValueError):
        raise FatalAnswer(f"batch {batch.key}: 200 with an unreadable body: {short(body)!r}") from None
    if events != batch.events or stored + present != events:
        raise FatalAnswer(f"batch {batch.key} of {batch.events} events: the server answered {short(body)!r}")
    return BatchResult(batch, stored=stored, already_present=present)


def why_retried(status: int, headers: Mapping[str, str], text: str) -> str:
    doubt = "in doubt" if status != 503 or headers.get(OUTCOME_HEADER) == "unknown" else "not stored"
    return f"{status} ({doubt}): {short(text)}"


def retry_after(headers: Mapping[str, str]) -> float:
    raw = headers.get("Retry-After", "")
    return float(raw) if raw.isdigit() else 0.0


class BatchClient:
    """Sends batches over one session (at most ``concurrency`` connections)."""

    def __init__(self, session: aiohttp.ClientSession, settings: ImportSettings) -> None:
        self.session = session
        self.settings = settings
        self.url = settings.url.rstrip("/") + PATH

    async def try_once(self, batch: Batch) -> tuple[int, str, float] | BatchResult:
        """One try: the final result, or (status, why, Retry-After) to retry."""
        headers = {"Content-Type": "text/csv", "Idempotency-Key": batch.key, PLACEMENT_HEADER: "strict"}
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_s)
        async with self.session.post(self.url, data=batch.body, headers=headers, timeout=timeout) as resp:
            body = await resp.text(errors="replace")
            if resp.status == 200:
                return counts(batch, body)
            if resp.status in REFUSED:
                return BatchResult(batch, refused=f"{resp.status}: {short(body)}")
            if resp.status == 413:
                raise FatalAnswer(f"batch {batch.key} is over the endpoint's limits ({short(body)}): "
                                  "lower --batch-events or --batch-bytes, and keep them for every rerun")
            if resp.status not in RETRIED:
                raise FatalAnswer(f"{self.url} answered {resp.status} to batch {batch.key}: {short(body)}")
            return resp.status, why_retried(resp.status, resp.headers, body), retry_after(resp.headers)

    async def send(self, batch: Batch, report: Reporter) -> BatchResult:
        """Tries until a final answer, or gives up after ``give_up_s`` (never silently: the result says so)."""
        settings = self.settings
        started, delay, tries = time.monotonic(), settings.backoff_first_s, 0
        while True:
            tries += 1
            try:
                outcome = await self.try_once(batch)
            except (TimeoutError, aiohttp.ClientError) as exc:
                outcome = (0, f"no answer (in doubt): {type(exc).__name__} {short(str(exc))}".rstrip(), 0.0)
            if isinstance(outcome, BatchResult):
                return BatchResult(outcome.batch, outcome.stored, outcome.already_present, outcome.refused,
                                   tries=tries)
            _, why, after = outcome
            wait = max(delay * (0.5 + random.random() / 2), min(after, settings.backoff_max_s))
            if time.monotonic() - started + wait > settings.give_up_s:
                return BatchResult(batch, gave_up=f"{why} (after {tries} tries)", tries=tries)
            report(batch, tries, why, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, settings.backoff_max_s)
