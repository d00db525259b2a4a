"""The shard file loader: good files load, bad ones fail with a message that says where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sharding.config import ACTIVE, RETIRED, ConfigError, Shard, load, parse, save


def shard(name: str = "a", port: int = 8101, **extra: Any) -> dict[str, Any]:
    return {"name": name, "writers": [f"127.0.0.1:{port}"], "dsn": f"postgresql://postgres@127.0.0.1:{port + 200}/r",
            **extra}


def good() -> dict[str, Any]:
    return {"shards": [shard("a", 8101), shard("b", 8102, state=RETIRED)], "aggregators": ["127.0.0.1:8201"]}


def test_a_good_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "shards.json"
    path.write_text(json.dumps(good()))
    topology = load(path)
    assert [s.name for s in topology.shards] == ["a", "b"]
    assert [s.name for s in topology.active_shards] == ["a"]
    assert topology.shard("b").state == RETIRED
    save(topology, path)
    assert load(path) == topology
    assert not list(tmp_path.glob(".shards.json.*")), "save leaves no temporary file behind"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "top level must be an object"),
        ({"shards": []}, "'shards' must be a non-empty list"),
        ({"shards": [shard()], "extra": 1}, "unknown key 'extra'"),
        ({"shards": ["a"]}, r"shards\[0\] must be an object"),
        ({"shards": [shard(name="A b")]}, r"shards\[0\]: name must match"),
        ({"shards": [shard(dsn="mysql://x")]}, r"shards\[0\] \(a\): dsn must be a postgresql:// URL"),
        ({"shards": [shard(state="paused")]}, "state must be one of active, retired"),
        ({"shards": [shard(writers="127.0.0.1:1")]}, "writers must be a list of host:port strings"),
        ({"shards": [shard(writers=["127.0.0.1"])]}, "'127.0.0.1' is not host:port"),
        ({"shards": [shard(writers=["127.0.0.1:70000"])]}, "is not host:port"),
        ({"shards": [shard(writers=[])]}, "an active shard needs at least one writer"),
        ({"shards": [shard(colour="red")]}, r"shards\[0\]: unknown key 'colour'"),
        ({"shards": [shard("a", 1), shard("a", 2)]}, "shard name 'a' appears twice"),
        ({"shards": [shard("a", 1), shard("b", 1)]}, "writer address '127.0.0.1:1' appears twice"),
        ({"shards": [shard("a", 1), shard("b", 2, dsn=shard("a", 1)["dsn"])]},
         r"shards a and b name the same database \(r on localhost:201\)"),
        # One database, spelled another way: loopback names, case, the default port and database.
        ({"shards": [shard("a", 1, dsn="postgresql://postgres@LOCALHOST/postgres"),
                     shard("b", 2, dsn="postgresql://postgres:secret@127.0.0.1:5432")]},
         "shards a and b name the same database"),
        ({"shards": [shard(state=RETIRED)]}, "at least one shard must be active"),
        ({"shards": [shard()], "aggregators": ["x:1", "x:1"]}, "aggregator address 'x:1' appears twice"),
        ({"shards": [shard()], "aggregators": "x:1"}, "aggregators must be a list"),
    ],
)
def test_bad_files_say_what_is_wrong(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(raw)


def test_load_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such shard file"):
        load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match=rf"{broken}: not valid JSON"):
        load(broken)
    empty = tmp_path / "empty.json"
    empty.write_text('{"shards": []}')
    with pytest.raises(ConfigError, match=rf"{empty}: 'shards' must be a non-empty list"):
        load(empty)


def test_a_retired_shard_may_keep_no_writer() -> None:
    topology = parse({"shards": [shard("a"), shard("b", 9000, writers=[], state=RETIRED)]})
    assert topology.shard("b").writers == ()


def test_changes_are_validated_as_a_whole() -> None:
    topology = parse(good())
    grown = topology.with_shard(Shard("c", ("127.0.0.1:8103",), "postgresql://postgres@127.0.0.1:8303/r"))
    assert [s.name for s in grown.active_shards] == ["a", "c"]
    with pytest.raises(ConfigError, match="shard name 'a' appears twice"):
        topology.with_shard(Shard("a", ("127.0.0.1:9999",), "postgresql://x@h:1/r"))
    assert grown.with_state("a", RETIRED).shard("a").state == RETIRED
    with pytest.raises(ConfigError, match="at least one shard must be active"):
        topology.with_state("a", RETIRED)
    with pytest.raises(KeyError):
        topology.with_state("zz", ACTIVE)
    assert topology.with_aggregators(["127.0.0.1:1", "127.0.0.1:2"]).aggregators == ("127.0.0.1:1", "127.0.0.1:2")


def test_different_databases_on_one_server_are_different_shards() -> None:
    parse({"shards": [shard("a", 1, dsn="postgresql://postgres@127.0.0.1:5432/one"),
                      shard("b", 2, dsn="postgresql://postgres@127.0.0.1:5432/two")]})
