"""Aggregator fixtures: an injectable clock and an aggregator app started for real (helpers: tests/support)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from aggregator.main import create_app
from common.hours import MS_PER_HOUR, hour_start_ms
from tests.support.aggregator_app import BASE_HOUR, Clock, MakeAggregator, aggregator_settings


@pytest.fixture
def clock() -> Clock:
    """Mid-hour of BASE_HOUR: the previous hour is out of its grace period."""
    return Clock(hour_start_ms(BASE_HOUR) + MS_PER_HOUR // 2)


@pytest.fixture
def make_aggregator(aiohttp_client: Callable[..., Awaitable[TestClient]], clock: Clock) -> MakeAggregator:
    """Start an aggregator app (its real start-up, pools and refresher) with test settings."""

    async def make(**overrides: object) -> TestClient:
        return await aiohttp_client(create_app(aggregator_settings(clock, **overrides)))

    return make
