"""Several batches at once, to the end or to a stop: the tally adds up and nothing is left waiting.

The endpoint is a stand-in that stores nothing: the point is the importer's
own bookkeeping (the real endpoint: tests/e2e/test_import.py).
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sharding.importer.cli import EXIT_GAVE_UP, EXIT_REFUSED, report
from sharding.importer.run import INTERRUPTED, run_import
from sharding.importer.settings import ImportSettings
from sharding.importer.source import CHUNK_ROWS, CsvSource
from sharding.importer.tally import Progress, RejectsFile, Tally
from tests.waiting import wait_until

TS = 1_764_000_000_000
# Requests each stand-in endpoint (by URL) has received, answered or not.
ARRIVED: dict[str, int] = {}


@pytest.fixture
async def endpoint(aiohttp_server: Callable[..., TestServer]) -> tuple[str, list[str], asyncio.Event]:
    """Answers every batch 200, all stored, once ``open`` is set; records the keys."""
    keys: list[str] = []
    gate = asyncio.Event()
    gate.set()

    async def answer(request: web.Request) -> web.Response:
        ARRIVED[url] = ARRIVED.get(url, 0) + 1
        await gate.wait()
        events = len(list(csv.reader(io.StringIO((await request.read()).decode()))))
        keys.append(request.headers["Idempotency-Key"])
        return web.Response(text=f"events,{events}\nstored,{events}\nalready_present,0\n")

    app = web.Application()
    app.router.add_post("/analytics/batch", answer)
    server = await aiohttp_server(app)  # type: ignore[misc]
    url = f"http://127.0.0.1:{server.port}"
    return url, keys, gate


def arrived(url: str) -> bool:
    return ARRIVED.get(url, 0) >= 2


def write_source(path: Path, rows: int, bad_every: int = 0) -> CsvSource:
    lines = ["timestamp,user,event"]
    for i in range(rows):
        event = "like" if bad_every and i % bad_every == 0 else "click"
        lines.append(f"{TS + i},user{i % 13},{event}")
    path.write_text("\n".join(lines) + "\n")
    return CsvSource.open(path)


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_every_row_is_imported_or_rejected_once(endpoint: tuple[str, list[str], asyncio.Event],
                                                      tmp_path: Path, concurrency: int) -> None:
    url, keys, _ = endpoint
    source = write_source(tmp_path / "in.csv", 503, bad_every=50)
    settings = ImportSettings(url=url, rejects=tmp_path / "rejects.csv", batch_events=10, concurrency=concurrency)
    tally = Tally(RejectsFile(settings.rejects))
    outcome = await asyncio.wait_for(run_import(source, settings, tally, Progress(None, False)), 30)
    tally.rejects.close()
    assert outcome.stop.reason is None and outcome.in_doubt == [] and outcome.rows_read == 503
    assert (tally.imported, tally.already_present, tally.refused) == (503 - 11, 0, 11)
    assert sorted(keys) == sorted({f"import-{source.identity}-{n}" for n in range(51)})
    assert len(settings.rejects.read_text().splitlines()) == 12


async def test_a_ctrl_c_finishes_what_is_in_flight_and_sends_nothing_more(
        endpoint: tuple[str, list[str], asyncio.Event], tmp_path: Path) -> None:
    url, keys, gate = endpoint
    gate.clear()
    source = write_source(tmp_path / "in.csv", 4 * CHUNK_ROWS)
    settings = ImportSettings(url=url, rejects=tmp_path / "rejects.csv", batch_events=10, concurrency=2)
    tally = Tally(RejectsFile(settings.rejects))
    task = asyncio.create_task(run_import(source, settings, tally, Progress(None, False)))
    await wait_until(lambda: arrived(url), "two batches in flight", 10)
    os.kill(os.getpid(), signal.SIGINT)  # the import's handler takes it (not pytest's)
    await asyncio.sleep(0.1)
    gate.set()
    outcome = await asyncio.wait_for(task, 30)
    assert outcome.stop.reason == INTERRUPTED and outcome.in_doubt == []
    assert len(keys) == 2 and tally.imported == 20 and outcome.rows_read < 4 * CHUNK_ROWS


@pytest.fixture
async def failing(aiohttp_server: Callable[..., TestServer]) -> tuple[str, list[int]]:
    """Answers every batch with the status in ``status[0]``."""
    status = [503]

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status[0], headers={"Retry-After": "1"}, text="shard b: no answer")

    app = web.Application()
    app.router.add_post("/analytics/batch", answer)
    server = await aiohttp_server(app)  # type: ignore[misc]
    return f"http://127.0.0.1:{server.port}", status


@pytest.mark.parametrize(("status", "reason", "exit_status"), [(503, "gave up on batch import-", EXIT_GAVE_UP),
                                                               (413, "error: ", EXIT_REFUSED)])
async def test_giving_up_or_an_answer_no_retry_can_change_stops_the_import_loudly(
        failing: tuple[str, list[int]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        status: int, reason: str, exit_status: int) -> None:
    url, answer = failing
    answer[0] = status
    source = write_source(tmp_path / "in.csv", 100)
    settings = ImportSettings(url=url, rejects=tmp_path / "rejects.csv", batch_events=10, concurrency=2,
                              backoff_first_s=0.01, backoff_max_s=0.05, give_up_s=0.3)
    tally = Tally(RejectsFile(settings.rejects))
    outcome = await asyncio.wait_for(run_import(source, settings, tally, Progress(None, False)), 30)
    assert outcome.stop.reason is not None and outcome.stop.reason.startswith(reason)
    assert tally.imported == 0
    assert report(outcome, settings, 1.0) == exit_status
    said = capsys.readouterr().err
    assert "rerun the same command" in said
    if status == 503:
        assert len(tally.gave_up) >= 1 and "GAVE UP on batch import-" in said
