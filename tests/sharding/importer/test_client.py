"""One batch until its answer is final: the batch endpoint's failure answers, from a server that gives them.

A stand-in server is the point here (its answers are the failures under
test); the real endpoint is driven end to end in tests/e2e/test_import.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from sharding.importer.batches import Batch
from sharding.importer.client import BatchClient, FatalAnswer
from sharding.importer.settings import ImportSettings
from sharding.importer.source import SourceRow

BATCH = Batch("import-src-0", b"1764000000000,alice,click\n1764000000001,bob,impression\n", 2, "id 1", "id 2",
              (SourceRow(1, "id 1", 1764000000000, "alice", "click"),
               SourceRow(2, "id 2", 1764000000001, "bob", "impression")))
OK: tuple[int, dict[str, str], str] = (200, {}, "events,2\nstored,1\nalready_present,1\n")
NOT_STORED = (503, {"Retry-After": "1"}, "shard b: database down")
UNKNOWN = (504, {"Retry-After": "1", "X-Reactions-Outcome": "unknown"}, "shard b: no answer")


@dataclass
class Endpoint:
    """Answers each POST with the next of ``answers`` (the last one forever) and keeps what it was sent."""

    answers: list[tuple[int, dict[str, str], str]]
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def answer(self, request: web.Request) -> web.Response:
        self.seen.append((dict(request.headers), await request.read()))
        status, headers, text = self.answers[min(len(self.seen), len(self.answers)) - 1]
        return web.Response(status=status, headers=headers, text=text)


@pytest.fixture
async def endpoint(aiohttp_server: Callable[..., TestServer]) -> Endpoint:
    found = Endpoint([OK])
    app = web.Application()
    app.router.add_post("/analytics/batch", found.answer)
    server = await aiohttp_server(app)  # type: ignore[misc]
    found.url = f"http://127.0.0.1:{server.port}"
    return found


async def send(endpoint: Endpoint, give_up_s: float = 5.0) -> tuple[object, list[str]]:
    settings = ImportSettings(url=endpoint.url, backoff_first_s=0.01, backoff_max_s=0.05, give_up_s=give_up_s)
    notes: list[str] = []
    async with ClientSession() as session:
        result = await BatchClient(session, settings).send(BATCH, lambda b, n, why, w: notes.append(why))
    return result, notes


async def test_not_stored_and_in_doubt_are_retried_with_the_same_key_body_and_strict_placement(
        endpoint: Endpoint) -> None:
    endpoint.answers = [NOT_STORED, UNKNOWN, OK]
    result, notes = await send(endpoint)
    assert (result.stored, result.already_present, result.tries) == (1, 1, 3)  # type: ignore[attr-defined]
    assert notes == ["503 (not stored): shard b: database down", "504 (in doubt): shard b: no answer"]
    assert len(endpoint.seen) == 3
    for headers, body in endpoint.seen:
        assert body == BATCH.body
        assert headers["Idempotency-Key"] == BATCH.key
        assert headers["X-Reactions-Placement"] == "strict"
        assert headers["Content-Type"] == "text/csv"


@pytest.mark.parametrize("status", [400, 422])
async def test_a_refusal_is_final(endpoint: Endpoint, status: int) -> None:
    endpoint.answers = [(status, {}, "record 2: user must not be empty")]
    result, notes = await send(endpoint)
    assert result.refused == f"{status}: record 2: user must not be empty"  # type: ignore[attr-defined]
    assert notes == [] and len(endpoint.seen) == 1


@pytest.mark.parametrize(("status", "said"), [(404, "answered 404"), (413, "lower --batch-events")])
async def test_an_answer_no_retry_can_change_stops_the_import(endpoint: Endpoint, status: int, said: str) -> None:
    endpoint.answers = [(status, {}, "too large")]
    with pytest.raises(FatalAnswer, match=said):
        await send(endpoint)


async def test_counts_that_do_not_add_up_stop_the_import(endpoint: Endpoint) -> None:
    endpoint.answers = [(200, {}, "events,3\nstored,3\nalready_present,0\n")]
    with pytest.raises(FatalAnswer, match="of 2 events"):
        await send(endpoint)


async def test_a_batch_without_a_final_answer_is_given_up_and_says_why(endpoint: Endpoint) -> None:
    endpoint.answers = [UNKNOWN]
    result, notes = await send(endpoint, give_up_s=0.3)
    assert result.gave_up is not None and result.gave_up.startswith("504 (in doubt)")  # type: ignore[attr-defined]
    assert len(notes) >= 2 and len(endpoint.seen) == len(notes) + 1
