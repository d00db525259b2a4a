"""``make status``'s health column for a writer: ready, and whether its clock is off (README, Writer: clocks)."""

from __future__ import annotations

import pytest

from sharding.local import operations
from sharding.local.processes import ProcessRecord

WRITER = ProcessRecord(name="writer-a", role="writer", pid=1, started=0, port=8101, log="", shard="a")


@pytest.mark.parametrize(("answer", "shown"), [
    ((200, "ready\nclock skew: nginx +0.002 s, postgres -0.000 s: within the 0.5 s margin\n"), "ready"),
    ((200, "ready\nclock skew: nginx +0.002 s, postgres -0.900 s: OFF by more than the 0.5 s margin (postgres)\n"),
     "ready, skewed"),
    ((503, "not ready: the database cannot commit\n"), "/readyz -> 503"),
    ((0, ""), "/readyz -> no answer"),
])
def test_a_writer_off_by_more_than_the_margin_is_ready_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                                    answer: tuple[int, str], shown: str) -> None:
    monkeypatch.setattr(operations, "alive", lambda record: True)
    monkeypatch.setattr(operations, "http_get", lambda url: (answer[0], {}, answer[1]))
    assert operations.health(WRITER) == shown
