"""A write's three outcomes as the audit load reads them, and the audit's verdict on each, without a cluster."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.faults.audit import AuditReport, Stored, check_keys
from tests.faults.load import NGINX_UNAVAILABLE, OUTCOME_HEADER, Load, LoadPlan
from tests.faults.record import AuditRecord, Outcome

# What the fake writer answers, per case: (status, headers, body).
ANSWERS: dict[str, tuple[int, dict[str, str], str]] = {
    "acknowledged": (204, {}, ""),
    "writer refuses": (503, {}, "database unavailable; retry\n"),
    "nginx refuses": (503, {"Retry-After": "1"}, f"{NGINX_UNAVAILABLE}; retry\n"),
    "unknown 504": (504, {OUTCOME_HEADER: "unknown"}, "outcome unknown; retry with the same key\n"),
    "unknown 503": (503, {OUTCOME_HEADER: "unknown"}, f"{NGINX_UNAVAILABLE}; retry\n"),
}
EXPECTED = {
    "acknowledged": ("204", Outcome.ACKED),
    "writer refuses": ("503 writer", Outcome.REFUSED),
    "nginx refuses": ("503 nginx", Outcome.REFUSED),
    "unknown 504": ("unknown 504", Outcome.UNANSWERED),
    "unknown 503": ("unknown 503", Outcome.UNANSWERED),
}


@pytest.fixture
async def fake_writer(aiohttp_server: Callable[..., TestServer]) -> tuple[str, dict[str, str]]:
    """A server on 127.0.0.1 answering every POST as ``case["now"]`` says."""
    case = {"now": "acknowledged"}

    async def answer(request: web.Request) -> web.Response:
        status, headers, body = ANSWERS[case["now"]]
        return web.Response(status=status, headers=headers, text=body or None)

    app = web.Application()
    app.router.add_post("/analytics/{ts}/{user}/{event}", answer)
    server = await aiohttp_server(app)  # type: ignore[misc]
    return f"http://127.0.0.1:{server.port}", case


@pytest.mark.parametrize("name", list(ANSWERS))
async def test_each_answer_is_acknowledged_refused_or_unknown(fake_writer: tuple[str, dict[str, str]],
                                                              name: str) -> None:
    base, case = fake_writer
    case["now"] = name
    load = Load(LoadPlan(base_url=base, prefix="t-"))
    kind = await load.post_direct(base)
    sent = load.record.events[-1]
    assert (kind, sent.outcome) == EXPECTED[name]
    assert load.stats.unknown == sent.unknown == (1 if name.startswith("unknown") else 0)
    assert 0 < load.stats.slowest_s < 5 and sent.key in load.stats.slowest


def test_the_audit_flags_a_refused_event_that_is_stored_and_allows_an_unknown_one() -> None:
    record = AuditRecord("t-")
    refused, unknown, acked = (record.new_event(1_700_000_000_000, u, "click") for u in "abc")
    for sent in (refused, unknown, acked):
        record.on_attempt(sent)
    refused.refusals.append(f"503 {NGINX_UNAVAILABLE}")
    unknown.ambiguous, unknown.unknown = 1, 1
    record.on_ack(acked)
    report = AuditReport("t")
    check_keys(record, Stored(copies=Counter([refused.key, unknown.key, acked.key])), report)
    assert [k.split()[0] for k in report.refused_but_stored] == [refused.key]
    assert [k.split(":")[0] for k in report.over_stored] == [refused.key]  # once is more than its 0 unanswered
    assert not report.lost
    assert "refused_but_counted=1" in report.line() and "unknown=" in report.line() and "slowest=" in report.line()
    report = AuditReport("t")
    check_keys(record, Stored(copies=Counter([acked.key])), report)
    assert not report.problems()  # refused and unknown events not stored: nothing wrong
