from __future__ import annotations

from dataclasses import dataclass

from common.settings import SettingsError, env_bool, env_float, env_int, env_str


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
    # Events waiting for a commit, beyond which new ones get 503 Retry-After.
    queue_max_events: int = 20_000
    # Batches committed at once, each on its own connection. With one, the
    # next batch fills while the current one waits for its WAL flush (natural
    # group commit); more flushers make smaller batches, which only pays off
    # with cores to spare (measured: perf/writer_bench.py, perf/bench.py).
    flushers: int = 1
    # False: one transaction per request (the naive design, a benchmark baseline).
    batching: bool = True
    # A commit that takes longer fails its batch with 503 (not acknowledged)
    # rather than blocking the flusher behind a stalled database forever.
    commit_timeout_s: float = 10.0
    pool_size: int = 4

    @classmethod
    def from_env(cls) -> Settings:
        settings = cls(
            dsn=env_str("REACTIONS_DSN", cls.dsn),
            host=env_str("REACTIONS_HOST", cls.host),
            port=env_int("REACTIONS_PORT", cls.port, minimum=1),
            batch_max_events=env_int("REACTIONS_BATCH_MAX_EVENTS", cls.batch_max_events, minimum=1),
            batch_max_wait_ms=env_float("REACTIONS_BATCH_MAX_WAIT_MS", cls.batch_max_wait_ms),
            queue_max_events=env_int("REACTIONS_QUEUE_MAX_EVENTS", cls.queue_max_events, minimum=1),
            flushers=env_int("REACTIONS_FLUSHERS", cls.flushers, minimum=1),
            batching=env_bool("REACTIONS_BATCHING", cls.batching),
            commit_timeout_s=env_float("REACTIONS_COMMIT_TIMEOUT_MS", cls.commit_timeout_s * 1000, 1.0) / 1000,
            pool_size=env_int("REACTIONS_POOL_SIZE", cls.pool_size, minimum=1),
        )
        if settings.pool_size < settings.flushers + 1:
            raise SettingsError("REACTIONS_POOL_SIZE must exceed REACTIONS_FLUSHERS (one connection stays for /readyz)")
        return settings
