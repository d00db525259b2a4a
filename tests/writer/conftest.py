"""Writer fixtures: a writer app started for real on the test shard (helpers: tests/support/writer_db.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from tests.support.writer_db import WriterClient
from writer.main import create_app
from writer.settings import Settings


@pytest.fixture
def writer_client(aiohttp_client: Callable[..., Awaitable[TestClient]], shard_dsn: str) -> WriterClient:
    """Start a writer app on the test shard; keyword arguments override Settings."""

    async def make(**overrides: object) -> TestClient:
        settings = Settings(dsn=overrides.pop("dsn", shard_dsn), **overrides)  # type: ignore[arg-type]
        return await aiohttp_client(create_app(settings))

    return make
