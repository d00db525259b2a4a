"""The report generator on a tiny synthetic run: tables, verdicts, charts, and the JSON round trip."""

from __future__ import annotations

from pathlib import Path

from perf.ledger import HourCounts, Ledger, audit
from perf.report import evaluate, write_report
from perf.results import (
    BASELINE,
    GET_CEILING,
    GET_CURRENT,
    POST_CEILING,
    POST_DURABLE,
    POST_NAIVE,
    TARGET,
    BatchRun,
    BenchResults,
    HistoryPoint,
    MixedRun,
    Profile,
    RequestStats,
    Round,
    Scenario,
)

HOUR = 499_000


def scenario(key: str, role: str, rps: list[float], p99: float) -> Scenario:
    batches = {"events_per_batch": 6.0, "commit_ms": 2.5} if key == POST_DURABLE else {}
    cache = {"HIT": 990, "MISS": 10} if key == GET_CURRENT else {}
    rounds = [Round(r, p99 / 4, p99, int(r * 2), 0, 0.5, 10.0 * i, {"nginx": 0.4, "writers": 0.8}, batches, cache)
              for i, r in enumerate(rps)]
    return Scenario(key, key.replace("_", " "), key.split("_")[0].upper(), role, "wrk", 32, rounds)


def synthetic() -> BenchResults:
    ledger = Ledger()
    ledger.record(HOUR * 3_600_000 + 5, "mixA-user1", "click")
    ledger.record(HOUR * 3_600_000 + 9, "mixA-user2", "impression")
    ledger.record(HOUR * 3_600_000 + 9, "mixA-user2", "impression")
    before = {HOUR: HourCounts(10, 4, 6)}
    after = {HOUR: HourCounts(12, 5, 8)}
    mixed = MixedRun(
        tool="locust", users=4, rate_per_user=10, seconds=2, generator_cores=0.3, generator_warnings=[],
        requests=[RequestStats("GET current hour", 20, 0, 10.0, 2, 8), RequestStats("POST current", 3, 0, 1.5, 3, 9)],
        history=[HistoryPoint(t, "Aggregated", 11.0, 0.0, 2, 8) for t in (0.0, 1.0)],
        failures={}, acknowledged=ledger.events, audit=audit(ledger, before, after), audit_settled_s=0.4,
    )
    return BenchResults(
        started="2026-01-01T00:00:00Z",
        machine={"cpus": "2", "python": "Python 3.11"},
        config={"shards": 3, "aggregators": 2, "connections": 32, "rounds": 2, "seconds": 1},
        scenarios=[
            scenario(GET_CEILING, BASELINE, [10_000, 12_000], 4.0),
            scenario(GET_CURRENT, TARGET, [9_000, 11_000], 5.0),
            scenario(POST_CEILING, BASELINE, [10_000, 10_000], 4.0),
            scenario(POST_NAIVE, BASELINE, [1_000, 1_000], 40.0),
            scenario(POST_DURABLE, TARGET, [4_000, 4_000], 30.0),
        ],
        mixed=mixed,
        profiles=[Profile("post durable", "writer-a", 5, 0.97, [("parse (common/events.py:60)", 0.1)],
                          [("handle (writer/views.py:20)", 0.6)])],
        notes=["synthetic"],
        batch=BatchRun(events_per_batch=1000, concurrency=8, seconds=10.0, batches=500, events_per_s=50_000.0,
                       p50_ms=40.0, p99_ms=120.0, errors={}, generator_cores=0.3, copy_rows_per_s=400_000.0,
                       single_post_per_s=4_000.0, exact=True, audit="acknowledged (1, 2, 3), counted (1, 2, 3)",
                       components={"writers": 1.2}),
    )


def test_report_has_tables_verdicts_and_charts(tmp_path: Path) -> None:
    report = write_report(synthetic(), tmp_path).read_text()

    assert "| get current | wrk -c 32 | 10,000 | 0.91x get ceiling |" in report
    assert "| POST durable >= 3x batching disabled | 4.00x (4,000 vs 1,000 req/s) | met |" in report
    assert "| POST durable >= 0.5x POST ceiling | 0.40x (4,000 vs 10,000 req/s) | **missed** |" in report
    assert "| POST durable p99 < 25 ms | 30.0 ms at 32 connections | **missed** |" in report
    assert "| 499000 | 2/1/2 | 2/1/2 | exact |" in report
    assert "`parse (common/events.py:60)`" in report
    assert "| batches of 1,000 >= 100,000 durable events/s | 50,000 events/s (50% of the target) | **missed** |" \
        in report
    assert "| batches >= 20x the single-POST path (events/s) | 12.5x (4,000 single-POST events/s) | **missed** |" \
        in report
    assert "COPY into one table: 400,000 rows/s, batches at 0.12x of it" in report
    # writers 1.2 cores and the generator 0.3 at 50,000 events/s
    assert "CPU per durable event (µs): writers 24.0, load generator 6.0, total 30.0" in report
    assert "| post durable | 6.0 | 2.50 |" in report
    for chart in ("throughput.png", "latency.png", "over_time.png", "mixed_over_time.png"):
        assert (tmp_path / chart).stat().st_size > 0


def test_results_survive_the_json_round_trip(tmp_path: Path) -> None:
    results = synthetic()
    results.save(tmp_path / "results.json")

    assert BenchResults.load(tmp_path / "results.json") == results


def test_audit_flags_an_acknowledged_event_that_is_not_counted() -> None:
    ledger = Ledger()
    ledger.record(HOUR * 3_600_000, "u1", "click")
    ledger.record(HOUR * 3_600_000, "u1", "click")

    [row] = audit(ledger, {HOUR: HourCounts(0, 0, 0)}, {HOUR: HourCounts(1, 1, 0)})

    assert row.missing_events == 1
    checks = {c.goal: c.met for c in evaluate(BenchResults("t", {}, {}, mixed=None))}
    assert checks["mixed: every 204 counted"] is None
    assert checks["batches: every acknowledged event counted"] is None


def test_report_gives_the_get_cache_hit_ratio(tmp_path: Path) -> None:
    report = write_report(synthetic(), tmp_path).read_text()
    assert "| get current | 99.00% | HIT 1,980, MISS 20 |" in report
    assert "| get ceiling | off | none logged (cache off) |" in report
