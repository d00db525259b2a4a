"""Settings of the local cluster; ``from_env`` is the only reader of the environment."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.settings import SettingsError, env_bool, env_int, env_str

# Internal ports are PORT plus an offset plus a slot (1..99): with PORT=8000,
# shard a's writer is on 8101, aggregator 1 on 8201, shard a's PostgreSQL on
# 8301. Clusters whose PORTs are at least PORT_SPAN apart never collide; closer
# ones skip the ports that are taken (and record what they chose).
WRITER_PORT_OFFSET = 100
AGGREGATOR_PORT_OFFSET = 200
POSTGRES_PORT_OFFSET = 300
PORT_SPAN = 400
# nginx serves the applied shard file to aggregators on other hosts on PORT+1 (internal, never PORT itself).
TOPOLOGY_PORT_OFFSET = 1
MAX_SLOTS = 99
# Where every part of ``make run`` listens unless HOST says otherwise: loopback.
HOST = "127.0.0.1"
# The file of the cluster's PostgreSQL password, in DATA_DIR unless PASSFILE says otherwise.
PASSFILE_NAME = "pgpass"


@dataclass(frozen=True)
class ClusterSettings:
    port: int = 8000
    shards: int = 3
    aggregators: int = 2
    data_dir: Path = Path("var")
    # The address every local part listens on and the shard file names (nothing assumes loopback).
    host: str = HOST
    # The libpq passfile with the PostgreSQL password (None: DATA_DIR/pgpass, made on first start).
    passfile: Path | None = None
    # How long any one part may take to become ready.
    ready_timeout_s: float = 60.0
    writer_argv: tuple[str, ...] = (sys.executable, "-m", "writer.main")
    aggregator_argv: tuple[str, ...] = (sys.executable, "-m", "aggregator.main")
    # `prune`'s default: raw events are kept this many whole days before today
    # (the writers' own default, REACTIONS_RAW_RETENTION_DAYS).
    raw_retention_days: int = 30
    # Extra environment for the services (tests shorten refresh intervals).
    service_env: dict[str, str] = field(default_factory=dict)
    # nginx reaches the writers over Unix sockets in DATA_DIR/sockets, not loopback TCP
    # (sharding/sockets.py; measured in docs/performance.md, POST levers). Chosen by `run`:
    # the other commands follow the running cluster's choice.
    writer_sockets: bool = False

    @classmethod
    def from_env(cls) -> ClusterSettings:
        settings = cls(
            port=env_int("PORT", cls.port, minimum=1),
            shards=env_int("SHARDS", cls.shards, minimum=1),
            aggregators=env_int("AGGREGATORS", cls.aggregators, minimum=1),
            data_dir=Path(env_str("DATA_DIR", str(cls.data_dir))),
            host=env_str("HOST", cls.host),
            passfile=Path(env_str("PASSFILE", "")) if env_str("PASSFILE", "") else None,
            raw_retention_days=env_int("REACTIONS_RAW_RETENTION_DAYS", cls.raw_retention_days, minimum=1),
            writer_sockets=env_bool("WRITER_SOCKETS", cls.writer_sockets),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.port + PORT_SPAN > 65535:
            raise SettingsError(f"PORT must be at most {65535 - PORT_SPAN} (internal ports go up to PORT+{PORT_SPAN})")
        if self.shards > MAX_SLOTS or self.aggregators > MAX_SLOTS:
            raise SettingsError(f"SHARDS and AGGREGATORS must be at most {MAX_SLOTS}")

    @property
    def pgpass(self) -> Path:
        """The absolute passfile."""
        return Path(os.path.abspath(self.passfile if self.passfile is not None else self.root / PASSFILE_NAME))

    @property
    def root(self) -> Path:
        """The absolute data directory (relative paths are taken from the current directory)."""
        return Path(os.path.abspath(self.data_dir))
