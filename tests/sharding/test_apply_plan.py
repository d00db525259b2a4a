"""Planning apply: what changes, and the edits it refuses (pure: no cluster)."""

from __future__ import annotations

import pytest

from sharding.apply import Refused, moved_refusal, plan, same_database_refusal
from sharding.config import Topology, parse

DSN = "postgresql://postgres@10.0.0.{n}:5432/reactions"


def topology(*shards: tuple[str, int, str], aggregators: tuple[str, ...] = ("10.0.1.1:8201",)) -> Topology:
    return parse({"shards": [{"name": name, "writers": [f"10.0.0.{n}:8101"], "dsn": DSN.format(n=n), "state": state}
                             for name, n, state in shards], "aggregators": list(aggregators)})


CURRENT = topology(("a", 1, "active"), ("b", 2, "active"))


def test_the_same_file_changes_nothing() -> None:
    changes = plan(CURRENT, CURRENT)
    assert changes.changes_nothing and changes.summary() == []


def test_a_new_shard_and_aggregator_are_checked_before_nginx_routes_to_them() -> None:
    desired = topology(("a", 1, "active"), ("b", 2, "active"), ("c", 3, "active"),
                       aggregators=("10.0.1.1:8201", "10.0.1.2:8201"))
    changes = plan(CURRENT, desired)
    assert [s.name for s in changes.new_shards] == ["c"]
    assert [s.name for s in changes.writers_to_check] == ["c"]
    assert changes.new_aggregators == ("10.0.1.2:8201",)
    assert changes.summary()[0].startswith("new shard c (postgresql://postgres@10.0.0.3:5432/reactions")


def test_retiring_needs_no_check_and_is_listed() -> None:
    changes = plan(CURRENT, topology(("a", 1, "retired"), ("b", 2, "active")))
    assert changes.retired == ("a",) and not changes.new_shards and not changes.writers_to_check


def test_removing_a_shard_that_may_hold_data_is_refused() -> None:
    with pytest.raises(Refused, match="retired, not removed"):
        plan(CURRENT, topology(("b", 2, "active")))


def test_a_retired_shard_may_leave_the_file_and_its_emptiness_is_checked() -> None:
    current = topology(("a", 1, "retired"), ("b", 2, "active"))
    assert [s.name for s in plan(current, topology(("b", 2, "active"))).removed_shards] == ["a"]


def test_renaming_a_shard_is_refused() -> None:
    with pytest.raises(Refused, match="never renamed"):
        plan(CURRENT, topology(("a", 1, "active"), ("z", 2, "active")))


def test_a_removed_shards_name_is_never_reused() -> None:
    with pytest.raises(Refused, match="never reused"):
        plan(CURRENT, topology(("a", 1, "active"), ("b", 2, "active"), ("c", 3, "active")),
             removed_names=frozenset({"c"}))


def test_a_new_dsn_is_a_move_that_must_reach_the_same_identity() -> None:
    desired = topology(("a", 9, "active"), ("b", 2, "active"))
    changes = plan(CURRENT, desired)
    assert [s.name for s in changes.moved_shards] == ["a"]
    shard = desired.shard("a")
    assert moved_refusal(shard, ("7", "u-a"), ("7", "u-a")) is None
    assert "reaches another database" in str(moved_refusal(shard, ("8", "u-x"), ("7", "u-a")))
    assert "never recorded" in str(moved_refusal(shard, ("7", "u-a"), None))


def test_a_new_shard_that_is_already_another_shard_is_refused() -> None:
    shard = topology(("c", 3, "active")).shard("c")
    assert same_database_refusal(shard, ("7", "u-c"), {"a": ("7", "u-a")}) is None
    assert "is already shard a" in str(same_database_refusal(shard, ("7", "u-a"), {"a": ("7", "u-a")}))
