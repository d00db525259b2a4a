"""Running an import: one reader cutting batches, ``concurrency`` senders, and the ways it stops.

It stops when every batch has a final answer; on Ctrl-C or SIGTERM it reads
no further, finishes the batches in flight and says what to rerun (a second
one abandons them: they are in doubt, and the rerun completes them); when a
batch is given up or an answer can never succeed it abandons the rest at
once. A rerun of the same command is always exact: it sends the same keys
with the same bodies, and what is stored answers "already present".
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from common.hours import now_ms
from sharding.importer.batches import Batch, BatchMaker, Reject
from sharding.importer.client import BatchClient, FatalAnswer
from sharding.importer.settings import ImportSettings
from sharding.importer.source import Source, SourceError
from sharding.importer.tally import Progress, Tally

INTERRUPTED = "interrupted"


@dataclass
class Stop:
    """Why the import stops early (None: it has not), and whether in-flight batches are abandoned."""

    reason: str | None = None
    abandon: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def request(self, reason: str, abandon: bool) -> None:
        if self.reason is None:
            self.reason = reason
        self.abandon = self.abandon or abandon
        self.changed.set()

    def abandon_in_flight(self) -> None:
        self.request(INTERRUPTED, abandon=True)

    def on_signal(self) -> None:
        """The first Ctrl-C finishes what is in flight, the second abandons it (only flags: nothing raises here)."""
        self.request(INTERRUPTED, abandon=self.reason is not None)


@dataclass
class Outcome:
    """The tally, why it stopped early if it did, and the batches abandoned in flight (in doubt)."""

    tally: Tally
    rows_read: int
    stop: Stop
    in_doubt: list[Batch]


class Importer:
    def __init__(self, source: Source, settings: ImportSettings, tally: Tally, progress: Progress) -> None:
        self.source = source
        self.settings = settings
        self.tally = tally
        self.progress = progress
        self.stop = Stop()
        self.queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=settings.concurrency)
        self.in_flight: dict[str, Batch] = {}
        self.rows_read = 0

    async def read(self) -> None:
        """Cuts the source into batches for the senders; always ends by telling them there is no more."""
        maker = BatchMaker(self.source.identity, self.settings.batch_events, self.settings.batch_bytes, now_ms())
        try:
            async with contextlib.aclosing(self.source.chunks()) as chunks:
                async for chunk in chunks:
                    self.rows_read += len(chunk)
                    for item in maker.feed(chunk):
                        await self.emit(item)
            for batch in maker.finish():
                await self.emit(batch)
            await self.queue.put(None)
        except SourceError as exc:
            self.stop.request(f"error: {exc}", abandon=False)
        finally:
            # Stopped early: a sender waiting on an empty queue must wake (a full one has none waiting).
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    async def emit(self, item: Batch | Reject) -> None:
        if isinstance(item, Reject):
            self.tally.reject(item)
            self.progress.advance(1)
            return
        await self.queue.put(item)
        await asyncio.sleep(0)  # let answers in while a file is read

    async def send(self, client: BatchClient) -> None:
        while self.stop.reason is None:
            batch = await self.queue.get()
            if batch is None:
                self.queue.put_nowait(None)  # for the next sender
                return
            if self.stop.reason is not None:
                return
            self.in_flight[batch.key] = batch
            try:
                result = await client.send(batch, self.progress.retrying)
            except FatalAnswer as exc:
                self.stop.request(f"error: {exc}", abandon=True)
                return
            del self.in_flight[batch.key]
            self.tally.record(result)
            self.progress.advance(batch.events)
            if result.gave_up is not None:
                self.stop.request(f"gave up on batch {batch.key}: {result.gave_up}", abandon=True)

    async def run(self) -> Outcome:
        connector = aiohttp.TCPConnector(limit=self.settings.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            client = BatchClient(session, self.settings)
            reader = asyncio.create_task(self.read())
            senders = [asyncio.create_task(self.send(client)) for _ in range(self.settings.concurrency)]
            await self.supervise(reader, senders)
        return Outcome(self.tally, self.rows_read, self.stop, list(self.in_flight.values()))

    async def supervise(self, reader: asyncio.Task[None], senders: list[asyncio.Task[None]]) -> None:
        """Waits for the senders; on a stop request, stops the reader, and on abandon the senders too."""
        done = asyncio.gather(*senders, return_exceptions=True)
        grace: asyncio.TimerHandle | None = None
        while not done.done():
            changed = asyncio.ensure_future(self.stop.changed.wait())
            waits: set[asyncio.Future[Any]] = {done, changed}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            self.stop.changed.clear()
            if self.stop.reason is not None:
                reader.cancel()
            if self.stop.abandon:
                for sender in senders:
                    sender.cancel()
            elif self.stop.reason is not None and grace is None:
                grace = self.finish_in_flight()
        if grace is not None:
            grace.cancel()
        for result in done.result():
            if isinstance(result, Exception):
                raise result  # a bug, not an outcome: never hidden
        with contextlib.suppress(asyncio.CancelledError):
            await reader

    def finish_in_flight(self) -> asyncio.TimerHandle:
        """Stopping: the batches in flight may finish within the grace, then they are abandoned."""
        grace_s = self.settings.stop_grace_s
        self.progress.note(f"stopping ({self.stop.reason}): no new batch; {len(self.in_flight)} in flight get "
                           f"{grace_s:.0f} s to finish (Ctrl-C again abandons them)")
        return asyncio.get_running_loop().call_later(grace_s, self.stop.abandon_in_flight)


async def run_import(source: Source, settings: ImportSettings, tally: Tally, progress: Progress) -> Outcome:
    """The import, with Ctrl-C and SIGTERM handled as stop requests for as long as it runs."""
    importer = Importer(source, settings, tally, progress)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, importer.stop.on_signal)
    try:
        return await importer.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
