from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from common.pg import WaitBounds
from common.settings import (
    CLOCK_SKEW_MARGIN_S,
    SETTLE_BOUND_S,
    STALENESS_BOUND_S,
    SettingsError,
    env_bool,
    env_float,
    env_int,
    env_str,
    write_budget_s,
)
from sharding.sockets import socket_path

# Below this, a healthy database on a busy machine would miss its bounds.
MIN_WAIT_MS = 1.0
# A part sent to another writer waits this much beyond that writer's own bound
# for a part (acquire + commit) before its outcome is unknown.
FORWARD_MARGIN_S = 0.3


@dataclass(frozen=True)
class Settings:
    """Writer configuration; ``from_env`` is the only reader of the environment."""

    dsn: str = "postgresql://postgres@127.0.0.1:5432/reactions"
    host: str = "127.0.0.1"
    port: int = 8101
    # A batch is committed when it holds this many events ...
    batch_max_events: int = 500
    # ... or when its first event has waited this long while a commit was busy.
    batch_max_wait_ms: float = 2.0
    # The commit window: a flusher with no commit in flight waits up to this
    # long (from the batch's first event) for as many events as were waiting
    # when the last commit ended. 0: commit whatever has arrived. Measured
    # (docs/performance.md): 5 ms gave batches of 10 and 20% less CPU per
    # event than 2 ms, at the same throughput and p99.
    commit_window_ms: float = 5.0
    # Events waiting for a commit, beyond which new ones get 503 Retry-After.
    queue_max_events: int = 20_000
    # Batches committed at once, each on its own connection. With one, the
    # next batch fills while the current one waits for its WAL flush (natural
    # group commit); more flushers make smaller batches, which only pays off
    # with cores to spare (measured: perf/writer_bench.py, perf/bench.py).
    flushers: int = 1
    # False: one transaction per request (the naive design, a benchmark baseline).
    batching: bool = True
    # Every wait is bounded (docs/design.md, Invariants), so that every POST is
    # answered within queue_wait_s + acquire_timeout_s + commit_timeout_s
    # (2 s by default; nginx's read timeout is set above it):
    # - an event not taken into a commit within this is refused (503, never sent);
    queue_wait_s: float = 0.5
    # - a connection not had within this: the batch is refused (503, never sent);
    acquire_timeout_s: float = 0.5
    # - a commit not answered within this has an unknown outcome (504 and
    #   X-Reactions-Outcome: unknown). PostgreSQL's own statement_timeout is
    #   set below it, so that where the server can, it reports a rollback (503).
    commit_timeout_s: float = 1.0
    pool_size: int = 4
    # The health probe: a durable heartbeat this often, each within probe_timeout_s.
    probe_interval_s: float = 0.25
    probe_timeout_s: float = 0.75
    # A second port serving /healthz, /readyz and /metrics that stays open while
    # the main one is closed because the database cannot commit (writer/gate.py).
    admin_port: int | None = None
    # Waiting for the database at start (it may start after the writer: docs/operations.md,
    # Start order): each try to connect is bounded by connect_timeout_s; the
    # tries go on forever, the pause between them doubling up to
    # connect_backoff_max_s. Meanwhile the write port stays closed.
    connect_timeout_s: float = 5.0
    connect_backoff_max_s: float = 5.0
    # Raw events are kept this many whole days before today (then their day's
    # partition is dropped); rollups are kept forever (common/partitions.py).
    raw_retention_days: int = 30
    # POST /analytics/batch (docs/contract.md, Batches). The topology, to place each
    # event where a single POST of its user would land: the shard file (a
    # path polled this often) or its URL; neither: every event stays here.
    shards_file: str | None = None
    shards_url: str | None = None
    topology_poll_s: float = 0.5
    # A batch holds at most this many events and bytes (413 beyond; nginx's
    # client_max_body_size for the batch location is the same 1 MiB).
    batch_post_max_events: int = 10_000
    batch_post_max_bytes: int = 1024 * 1024
    # Batch parts committed at once on this shard, each on a connection of a
    # pool of their own (a part beyond them waits REACTIONS_ACQUIRE_TIMEOUT_MS).
    batch_pool_size: int = 4
    # A batch's body must arrive within this (nginx sends it whole at once).
    batch_body_timeout_s: float = 10.0
    # A part sent to another shard's writer: its connect (a refused or timed
    # out connect is "not sent": the part moves on along the ring, as nginx
    # moves a POST) and its answer, above that writer's own acquire + commit
    # bounds (by FORWARD_MARGIN_S unless set: 1.8 s by default) and below
    # nginx's 2.2 s read timeout.
    batch_connect_timeout_s: float = 0.3
    batch_forward_timeout_ms: float | None = None
    # The (key, part) records of committed batch parts are kept this long,
    # whatever the raw log's retention: a retry later than this may count twice.
    batch_key_retention_days: int = 7
    # The settle bound (docs/design.md, Invariants 8) and what it is derived from: a
    # write commits no later than nginx's stamp + settle − staleness − skew
    # margin (writer/settle.py), 2.5 s by default, above the answer bound.
    settle_s: float = SETTLE_BOUND_S
    staleness_s: float = STALENESS_BOUND_S
    clock_skew_margin_s: float = CLOCK_SKEW_MARGIN_S
    # A directory: the write port is also a Unix socket there (DIR/writer-PORT.sock,
    # gated like the port), and batches are placed on the ring of the sockets'
    # names, which nginx is then given (sharding/sockets.py). Every writer of
    # the cluster and its nginx share the directory: the local cluster's WRITER_SOCKETS=1.
    writer_sockets: str | None = None

    @property
    def write_budget_s(self) -> float:
        """How long after nginx's stamp (or its arrival, without one) a write may still commit."""
        return write_budget_s(self.settle_s, self.staleness_s, self.clock_skew_margin_s)

    @cached_property
    def bounds(self) -> WaitBounds:
        return WaitBounds(acquire_s=self.acquire_timeout_s, statement_s=self.commit_timeout_s)

    @cached_property
    def probe_bounds(self) -> WaitBounds:
        return WaitBounds(acquire_s=self.probe_timeout_s, statement_s=self.probe_timeout_s)

    @property
    def answer_bound_s(self) -> float:
        """The longest a POST waits for its answer."""
        return self.queue_wait_s + self.acquire_timeout_s + self.commit_timeout_s

    @property
    def part_bound_s(self) -> float:
        """The longest one batch part's commit on this writer takes to be answered."""
        return self.acquire_timeout_s + self.commit_timeout_s

    @property
    def batch_forward_timeout_s(self) -> float:
        if self.batch_forward_timeout_ms is not None:
            return self.batch_forward_timeout_ms / 1000
        return self.part_bound_s + FORWARD_MARGIN_S

    @classmethod
    def from_env(cls) -> Settings:
        def ms(name: str, default_s: float) -> float:
            return env_float(name, default_s * 1000, MIN_WAIT_MS) / 1000

        settings = cls(
            dsn=env_str("REACTIONS_DSN", cls.dsn),
            host=env_str("REACTIONS_HOST", cls.host),
            port=env_int("REACTIONS_PORT", cls.port, minimum=1),
            batch_max_events=env_int("REACTIONS_BATCH_MAX_EVENTS", cls.batch_max_events, minimum=1),
            batch_max_wait_ms=env_float("REACTIONS_BATCH_MAX_WAIT_MS", cls.batch_max_wait_ms),
            commit_window_ms=env_float("REACTIONS_COMMIT_WINDOW_MS", cls.commit_window_ms),
            queue_max_events=env_int("REACTIONS_QUEUE_MAX_EVENTS", cls.queue_max_events, minimum=1),
            flushers=env_int("REACTIONS_FLUSHERS", cls.flushers, minimum=1),
            batching=env_bool("REACTIONS_BATCHING", cls.batching),
            queue_wait_s=ms("REACTIONS_QUEUE_WAIT_MS", cls.queue_wait_s),
            acquire_timeout_s=ms("REACTIONS_ACQUIRE_TIMEOUT_MS", cls.acquire_timeout_s),
            commit_timeout_s=ms("REACTIONS_COMMIT_TIMEOUT_MS", cls.commit_timeout_s),
            pool_size=env_int("REACTIONS_POOL_SIZE", cls.pool_size, minimum=1),
            probe_interval_s=ms("REACTIONS_PROBE_INTERVAL_MS", cls.probe_interval_s),
            probe_timeout_s=ms("REACTIONS_PROBE_TIMEOUT_MS", cls.probe_timeout_s),
            connect_timeout_s=ms("REACTIONS_CONNECT_TIMEOUT_MS", cls.connect_timeout_s),
            connect_backoff_max_s=ms("REACTIONS_CONNECT_BACKOFF_MAX_MS", cls.connect_backoff_max_s),
            admin_port=env_int("REACTIONS_ADMIN_PORT", 0, minimum=0) or None,
            raw_retention_days=env_int("REACTIONS_RAW_RETENTION_DAYS", cls.raw_retention_days, minimum=1),
            shards_file=env_str("REACTIONS_SHARDS_FILE", "") or None,
            shards_url=env_str("REACTIONS_SHARDS_URL", "") or None,
            topology_poll_s=ms("REACTIONS_TOPOLOGY_POLL_MS", cls.topology_poll_s),
            batch_post_max_events=env_int("REACTIONS_BATCH_POST_MAX_EVENTS", cls.batch_post_max_events, minimum=1),
            batch_post_max_bytes=env_int("REACTIONS_BATCH_POST_MAX_BYTES", cls.batch_post_max_bytes, minimum=1),
            batch_pool_size=env_int("REACTIONS_BATCH_POOL_SIZE", cls.batch_pool_size, minimum=1),
            batch_body_timeout_s=ms("REACTIONS_BATCH_BODY_TIMEOUT_MS", cls.batch_body_timeout_s),
            batch_connect_timeout_s=ms("REACTIONS_BATCH_CONNECT_TIMEOUT_MS", cls.batch_connect_timeout_s),
            batch_forward_timeout_ms=env_float("REACTIONS_BATCH_FORWARD_TIMEOUT_MS", 0.0) or None,
            batch_key_retention_days=env_int("REACTIONS_BATCH_KEY_RETENTION_DAYS", cls.batch_key_retention_days,
                                             minimum=1),
            settle_s=ms("REACTIONS_SETTLE_MS", cls.settle_s),
            staleness_s=ms("REACTIONS_STALENESS_MS", cls.staleness_s),
            clock_skew_margin_s=ms("REACTIONS_CLOCK_SKEW_MARGIN_MS", cls.clock_skew_margin_s),
            writer_sockets=env_str("REACTIONS_WRITER_SOCKETS", "") or None,
        )
        if settings.write_budget_s <= 0:
            raise SettingsError("REACTIONS_SETTLE_MS must exceed REACTIONS_STALENESS_MS"
                                " + REACTIONS_CLOCK_SKEW_MARGIN_MS (a write must have some time to commit)")
        if settings.commit_window_ms / 1000 >= settings.queue_wait_s:
            raise SettingsError("REACTIONS_COMMIT_WINDOW_MS must be below REACTIONS_QUEUE_WAIT_MS"
                                " (an event that waited the queue-wait bound is refused)")
        if settings.pool_size < settings.flushers + 1:
            raise SettingsError("REACTIONS_POOL_SIZE must exceed REACTIONS_FLUSHERS"
                                " (one connection stays for the heartbeat and the raw log's upkeep)")
        if settings.shards_file and settings.shards_url:
            raise SettingsError("set REACTIONS_SHARDS_FILE or REACTIONS_SHARDS_URL, not both")
        if settings.batch_forward_timeout_s <= settings.part_bound_s:
            raise SettingsError("REACTIONS_BATCH_FORWARD_TIMEOUT_MS must exceed REACTIONS_ACQUIRE_TIMEOUT_MS +"
                                " REACTIONS_COMMIT_TIMEOUT_MS (the other writer's own bound for a part)")
        if settings.writer_sockets is not None:
            if not settings.writer_sockets.startswith("/"):
                raise SettingsError("REACTIONS_WRITER_SOCKETS must be an absolute directory (nginx is given it)")
            try:
                socket_path(settings.writer_sockets, f"{settings.host}:{settings.port}")
            except ValueError as exc:
                raise SettingsError(f"REACTIONS_WRITER_SOCKETS: {exc}") from None
        return settings

    @property
    def unix_path(self) -> str | None:
        """The write port's Unix socket, if the writer has one."""
        return socket_path(self.writer_sockets, f"{self.host}:{self.port}") if self.writer_sockets else None
