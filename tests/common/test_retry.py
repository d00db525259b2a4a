"""Waiting for a part that is not there yet: the backoff's doubling and cap, and what is told of the wait."""

from __future__ import annotations

import pytest

from common.retry import LOG_EVERY_TRIES, Backoff, Waiting, retry_forever


def test_the_pause_doubles_from_the_first_and_never_exceeds_the_cap() -> None:
    backoff = Backoff(max_s=1.0, first_s=0.1)
    assert [backoff.delay(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.delay(10_000) == 1.0


def test_a_wait_is_told_when_its_reason_changes_and_every_few_tries() -> None:
    told: list[str] = []
    waiting = Waiting("its database", report=told.append)
    for _ in range(LOG_EVERY_TRIES):
        waiting.failed("ConnectionRefusedError")
    waiting.failed("InvalidCatalogNameError: database \"reactions\" does not exist")
    assert told == [
        "waiting for its database: ConnectionRefusedError (try 1); trying again",
        f"waiting for its database: ConnectionRefusedError (try {LOG_EVERY_TRIES}); trying again",
        f"waiting for its database: InvalidCatalogNameError: database \"reactions\" does not exist "
        f"(try {LOG_EVERY_TRIES + 1}); trying again",
    ]
    assert not waiting.done
    waiting.succeeded()
    assert waiting.done and waiting.reason is None


async def test_retry_forever_tries_again_on_what_it_is_told_and_lets_the_rest_through() -> None:
    outcomes: list[BaseException | str] = [OSError("refused"), TimeoutError(), "there"]

    async def attempt() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    waiting = Waiting("it", report=lambda _text: None)
    assert await retry_forever(attempt, waiting, Backoff(max_s=0.01, first_s=0.001), (OSError, TimeoutError)) \
        == "there"
    assert waiting.tries == 2 and waiting.done

    async def broken() -> str:
        raise RuntimeError("a bug, not a wait")

    with pytest.raises(RuntimeError, match="a bug"):
        await retry_forever(broken, Waiting("it"), Backoff(max_s=0.01), (OSError,))
