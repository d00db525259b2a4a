"""The metrics registries: one per app, prometheus-client's exposition, misuse caught where it happens."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator.metrics import READ_KINDS, AggregatorMetrics
from common.metrics import exposition
from writer.metrics import WriterMetrics


def families(body: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(body.decode())}


def test_each_app_has_its_own_registry() -> None:
    first, second = WriterMetrics.create(), WriterMetrics.create()
    first.on_commit(5, 0.01)
    assert first.registry.get_sample_value("reactions_events_committed_total") == 5
    assert second.registry.get_sample_value("reactions_events_committed_total") == 0


def test_a_labelled_counter_used_without_labels_fails_at_the_call_not_at_the_scrape() -> None:
    metrics = AggregatorMetrics.create()
    with pytest.raises(ValueError):
        metrics.reads.inc()
    response = exposition(metrics.registry)
    assert response.status == 200
    assert response.body is not None and isinstance(response.body, bytes)
    found = families(response.body)
    assert {labels["kind"] for labels, _ in found["reactions_read_requests"]} == set(READ_KINDS)


def test_the_page_has_process_metrics_and_no_created_samples() -> None:
    metrics = WriterMetrics.create()
    response = exposition(metrics.registry)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert isinstance(response.body, bytes)
    found = families(response.body)
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert name in found, name
    assert not [name for name in found if name.endswith("_created")]


def test_scrape_time_values_follow_their_source() -> None:
    metrics = AggregatorMetrics.create()
    shards = {("a", "active"): 1.0}
    metrics.watch_shards(lambda: shards)
    metrics.publish_bounds(1.0, 2.0)
    shards[("b", "retired")] = 1.0
    assert metrics.registry.get_sample_value("reactions_shard_read", {"shard": "b", "state": "retired"}) == 1
    assert metrics.registry.get_sample_value("reactions_live_max_lag_seconds") == 2
    metrics.last_complete_refresh -= 10
    assert (metrics.registry.get_sample_value("reactions_refresh_lag_seconds") or 0) >= 10
