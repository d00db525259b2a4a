"""Writer fixtures: a writer started for real on the test shard (helpers: tests/support/writer_db.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import RawTestServer, TestClient

from tests.support.writer_db import WriterClient
from writer.main import create_app, started
from writer.routes import dispatcher
from writer.settings import Settings


@pytest.fixture
async def writer_client(aiohttp_client: Callable[..., Awaitable[TestClient]], shard_dsn: str,
                        ) -> AsyncIterator[WriterClient]:
    """Start a writer on the test shard, served as ``python -m writer.main`` serves it; keyword
    arguments override Settings."""
    async with contextlib.AsyncExitStack() as writers:

        async def make(**overrides: object) -> TestClient:
            settings = Settings(dsn=overrides.pop("dsn", shard_dsn), **overrides)  # type: ignore[arg-type]
            app = await writers.enter_async_context(started(create_app(settings)))
            return await aiohttp_client(RawTestServer(dispatcher(app)))

        yield make
