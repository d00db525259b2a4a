"""The shard file: the one description of a Reactions deployment's topology.

JSON, so that tools can rewrite it with the standard library::

    {
      "shards": [
        {"name": "a", "writers": ["127.0.0.1:8101"],
         "dsn": "postgresql://postgres@127.0.0.1:5433/reactions", "state": "active"}
      ],
      "aggregators": ["127.0.0.1:8201"]
    }

A shard is ``active`` (takes writes, is read) or ``retired`` (takes no
writes, is still read for the hours it holds: shard data is never discarded).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ACTIVE = "active"
RETIRED = "retired"
STATES = (ACTIVE, RETIRED)
# Shard names appear in nginx upstream names, file names and metric labels.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
ADDRESS_PATTERN = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")


class ConfigError(ValueError):
    """The shard file is malformed; the message says where."""


@dataclass(frozen=True)
class Shard:
    name: str
    writers: tuple[str, ...]
    dsn: str
    state: str = ACTIVE

    @property
    def active(self) -> bool:
        return self.state == ACTIVE

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "writers": list(self.writers), "dsn": self.dsn, "state": self.state}


@dataclass(frozen=True)
class Topology:
    shards: tuple[Shard, ...]
    aggregators: tuple[str, ...] = field(default=())

    @property
    def active_shards(self) -> tuple[Shard, ...]:
        return tuple(s for s in self.shards if s.active)

    def shard(self, name: str) -> Shard:
        for shard in self.shards:
            if shard.name == name:
                return shard
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {"shards": [s.to_json() for s in self.shards], "aggregators": list(self.aggregators)}

    def with_shard(self, shard: Shard) -> Topology:
        """This topology plus one more shard, validated as a whole."""
        return parse({"shards": [*(s.to_json() for s in self.shards), shard.to_json()],
                      "aggregators": list(self.aggregators)})

    def with_state(self, name: str, state: str) -> Topology:
        """This topology with one shard's state changed, validated as a whole."""
        self.shard(name)  # KeyError for an unknown shard
        shards = [{**s.to_json(), "state": state} if s.name == name else s.to_json() for s in self.shards]
        return parse({"shards": shards, "aggregators": list(self.aggregators)})

    def with_aggregators(self, aggregators: Sequence[str]) -> Topology:
        return parse({"shards": [s.to_json() for s in self.shards], "aggregators": list(aggregators)})


def load(path: str | os.PathLike[str]) -> Topology:
    """Read and validate a shard file; raise ConfigError with a clear reason."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such shard file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    try:
        return parse(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse(raw: Any) -> Topology:
    if not isinstance(raw, dict):
        raise ConfigError("the top level must be an object with 'shards'")
    unknown = set(raw) - {"shards", "aggregators"}
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}")
    shards_raw = raw.get("shards")
    if not isinstance(shards_raw, list) or not shards_raw:
        raise ConfigError("'shards' must be a non-empty list")
    shards = tuple(parse_shard(i, s) for i, s in enumerate(shards_raw))
    check_unique([s.name for s in shards], "shard name")
    check_unique([w for s in shards for w in s.writers], "writer address")
    # One database under two names would be read, and summed, twice (docs/design.md, Invariants 7).
    check_same_database(shards)
    if not any(s.active for s in shards):
        raise ConfigError("at least one shard must be active")
    aggregators = tuple(parse_addresses(raw.get("aggregators", []), "aggregators"))
    check_unique(list(aggregators), "aggregator address")
    return Topology(shards=shards, aggregators=aggregators)


def parse_shard(index: int, raw: Any) -> Shard:
    where = f"shards[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object")
    unknown = set(raw) - {"name", "writers", "dsn", "state"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: name must match {NAME_PATTERN.pattern}")
    dsn = raw.get("dsn")
    if not isinstance(dsn, str) or not dsn.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{where} ({name}): dsn must be a postgresql:// URL")
    state = raw.get("state", ACTIVE)
    if state not in STATES:
        raise ConfigError(f"{where} ({name}): state must be one of {', '.join(STATES)}")
    writers = tuple(parse_addresses(raw.get("writers"), f"{where} ({name}) writers"))
    if state == ACTIVE and not writers:
        raise ConfigError(f"{where} ({name}): an active shard needs at least one writer")
    return Shard(name=name, writers=writers, dsn=dsn, state=state)


def parse_addresses(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
        raise ConfigError(f"{where} must be a list of host:port strings")
    for address in raw:
        if not ADDRESS_PATTERN.match(address) or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
            raise ConfigError(f"{where}: {address!r} is not host:port")
    return list(raw)


# Spellings of this machine that reach the same server.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})
DEFAULT_PG_PORT = 5432


def database_of(dsn: str) -> tuple[str, int, str]:
    """(host, port, database) a DSN reaches, normalised: case, loopback spellings, default port and database.

    PostgreSQL's default database is the user's name. A DSN that names its
    host only in the query string (``?host=``) is normalised as far as its URL goes.
    """
    url = urlsplit(dsn)
    host = (url.hostname or "localhost").lower()
    host = "localhost" if host in LOOPBACK_NAMES else host
    try:
        port = url.port or DEFAULT_PG_PORT
    except ValueError:
        raise ConfigError(f"dsn {redact_password(dsn)!r} has a malformed port") from None
    database = unquote(url.path.lstrip("/")) or unquote(url.username or "postgres")
    return host, port, database


def redact_password(dsn: str) -> str:
    url = urlsplit(dsn)
    if url.password is None:
        return dsn
    return dsn.replace(f":{url.password}@", ":***@", 1)


def check_same_database(shards: Sequence[Shard]) -> None:
    """Two shards that name one database would count it twice (docs/design.md, Invariants 7)."""
    seen: dict[tuple[str, int, str], str] = {}
    for shard in shards:
        database = database_of(shard.dsn)
        if database in seen:
            raise ConfigError(f"shards {seen[database]} and {shard.name} name the same database "
                              f"({database[2]} on {database[0]}:{database[1]})")
        seen[database] = shard.name


def check_unique(values: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"{what} {value!r} appears twice")
        seen.add(value)


def save(topology: Topology, path: str | os.PathLike[str]) -> None:
    """Write atomically, so that a reader never sees half a file."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    # No secret in it (passwords live in the passfile), and nginx's workers serve it: readable by all.
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w") as out:
        json.dump(topology.to_json(), out, indent=2)
        out.write("\n")
    os.replace(tmp, target)
