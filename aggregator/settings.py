"""Aggregator configuration; ``from_env`` is the only reader of the environment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from common.hours import now_ms
from common.pg import WaitBounds
from common.settings import SettingsError, env_bool, env_float, env_int, env_str

# Refreshing faster than this only burns shard CPU; tests use about this.
MIN_REFRESH_INTERVAL_MS = 20.0
# Below this a healthy shard on a busy machine would be reported as failing.
MIN_SHARD_TIMEOUT_MS = 50.0
# Connections per shard that cold reads leave free: the live-hour refresh and
# the version check run together every tick, so cold reads never starve them
# (a second live hour near the turn waits only for one of those short reads).
REFRESHER_CONNECTIONS = 2


@dataclass(frozen=True)
class Settings:
    """Where the shards are, how fresh the live hour is, how long to wait for a shard."""

    # The shard file (sharding.config); polled for changes and re-read on SIGHUP.
    shards_file: str | None = None
    # Or its URL, on the entry host's internal topology port (aggregators on other hosts).
    shards_url: str | None = None
    # Fallback when there is no shard file: a fixed list of shard DSNs.
    shard_dsns: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8201
    # The live hour lags commits by at most this (docs/design.md, Invariants 5): twice
    # it (1.5 s, the stale mark) plus nginx's GET cache (at most 0.5 s) is the 2 s bound.
    refresh_interval_s: float = 0.75
    # Live answers older than this are marked stale; None: twice the refresh interval.
    live_max_lag_s: float | None = None
    # How long after the hour turns the previous hour stays live: late events
    # from clients whose clocks lag still land there, so keep it in memory.
    grace_s: float = 300.0
    # A shard that does not answer within this is treated as unreachable: it
    # bounds getting a connection, the statement and giving it back
    # (docs/design.md, Invariants 6). A cold read answers within cold_slot_wait_s + this.
    shard_timeout_s: float = 1.0
    # How long a cold read waits for a free slot before answering 503.
    cold_slot_wait_s: float = 0.5
    # A series (GET /analytics/series) is answered, or refused with 503, within
    # this: the cold-read bound (slot wait + shard timeout), well below nginx's
    # 2.2 s proxy_read_timeout, so that the client gets the reason, not a 504.
    series_timeout_s: float = 1.5
    # Past hours kept (one small entry each: a body and a version per shard).
    past_cache_hours: int = 4096
    # Connections per shard: the refresher, the version check, and at most
    # pool_size - REFRESHER_CONNECTIONS (at least 1) concurrent cold reads.
    pool_size: int = 4
    # False: no LISTEN; only the version check notices late writes (tests use it).
    listen_for_late_writes: bool = True
    # Milliseconds since the epoch; injectable so tests can place "now".
    clock: Callable[[], int] = field(default=now_ms, repr=False, compare=False)

    @cached_property
    def stale_after_ms(self) -> float:
        """A live answer whose snapshot is older than this is marked stale.

        A refresh that is slow but not yet failed (up to the shard timeout)
        would otherwise serve an old snapshot as fresh: this keeps docs/design.md,
        Invariants 5 exact, at twice the refresh interval unless configured.
        """
        return 1000 * (self.live_max_lag_s if self.live_max_lag_s is not None else 2 * self.refresh_interval_s)

    @property
    def shard_bounds(self) -> WaitBounds:
        return WaitBounds(acquire_s=self.shard_timeout_s, statement_s=self.shard_timeout_s)

    @property
    def cold_read_slots(self) -> int:
        """Cold fan-outs in flight at once: the pool less what the refresher needs (at least one)."""
        return max(1, self.pool_size - REFRESHER_CONNECTIONS)

    @classmethod
    def from_env(cls) -> Settings:
        shards_file = env_str("REACTIONS_SHARDS_FILE", "") or None
        shards_url = env_str("REACTIONS_SHARDS_URL", "") or None
        dsns = tuple(d.strip() for d in env_str("REACTIONS_SHARD_DSNS", "").split(",") if d.strip())
        if shards_file is None and shards_url is None and not dsns:
            raise SettingsError("set REACTIONS_SHARDS_FILE or REACTIONS_SHARDS_URL "
                                "(or REACTIONS_SHARD_DSNS, comma-separated)")
        if shards_file is not None and shards_url is not None:
            raise SettingsError("set REACTIONS_SHARDS_FILE or REACTIONS_SHARDS_URL, not both")
        if shards_url is not None and not shards_url.startswith(("http://", "https://")):
            raise SettingsError(f"REACTIONS_SHARDS_URL must be an http(s) URL, got {shards_url!r}")
        return cls(
            shards_file=shards_file,
            shards_url=shards_url,
            shard_dsns=dsns,
            host=env_str("REACTIONS_HOST", cls.host),
            port=env_int("REACTIONS_PORT", cls.port, minimum=1),
            refresh_interval_s=env_float("REACTIONS_REFRESH_INTERVAL_MS", 1000 * cls.refresh_interval_s,
                                         MIN_REFRESH_INTERVAL_MS) / 1000,
            live_max_lag_s=(env_float("REACTIONS_LIVE_MAX_LAG_MS", 0.0, MIN_REFRESH_INTERVAL_MS) / 1000) or None,
            grace_s=env_float("REACTIONS_GRACE_S", cls.grace_s),
            shard_timeout_s=env_float("REACTIONS_SHARD_TIMEOUT_MS", 1000.0, MIN_SHARD_TIMEOUT_MS) / 1000,
            cold_slot_wait_s=env_float("REACTIONS_COLD_SLOT_WAIT_MS", 500.0, MIN_SHARD_TIMEOUT_MS) / 1000,
            series_timeout_s=env_float("REACTIONS_SERIES_TIMEOUT_MS", 1500.0, MIN_SHARD_TIMEOUT_MS) / 1000,
            past_cache_hours=env_int("REACTIONS_PAST_CACHE_HOURS", cls.past_cache_hours, minimum=1),
            pool_size=env_int("REACTIONS_POOL_SIZE", cls.pool_size, minimum=2),
            listen_for_late_writes=env_bool("REACTIONS_LISTEN", cls.listen_for_late_writes),
        )
