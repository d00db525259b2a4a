"""What one ``make bench`` measured: plain dataclasses, saved as results.json beside the report."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The component of a round's CPU that is neither the system under test nor the load generator.
OTHER = "other"
# The bench's other stacks, idle while one is loaded (their background work interferes).
IDLE_STACKS = "idle stacks"
# Kernel softirq time (loopback networking): caused by the load, charged to no process.
SOFTIRQ = "softirq"
# Names in a batch run's CPU per event (BatchRun.cpu_us_per_event) beside the components'.
LOAD_GENERATOR = "load generator"
TOTAL = "total"
BASELINE = "baseline"
TARGET = "target"
# The scenarios measured with wrk, in the order they run and are shown.
GET_CEILING = "get_ceiling"  # nginx + trivial aiohttp answering the 3-line body
GET_CURRENT = "get_current"  # nginx + aggregators, current hour
POST_CEILING = "post_ceiling"  # nginx + trivial aiohttp answering 204, storing nothing
POST_CEILING_UNIX = "post_ceiling_unix"  # the same, nginx to the trivial servers over Unix sockets (--writer-sockets 1)
POST_NAIVE = "post_naive"  # nginx + writers with REACTIONS_BATCHING=0
POST_DURABLE = "post_durable"  # nginx + writers (group commit)


@dataclass(frozen=True)
class Round:
    """One bounded run of one scenario."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    generator_cores: float  # CPU the load generator itself used, in cores
    started_s: float  # since the bench started
    components: dict[str, float] = field(default_factory=dict)  # cores used by nginx, writers, ...
    batches: dict[str, float] = field(default_factory=dict)  # writers' events_per_batch and commit_ms
    cache: dict[str, int] = field(default_factory=dict)  # nginx's GET cache: answers by $upstream_cache_status


@dataclass(frozen=True)
class Scenario:
    key: str  # get_ceiling, get_current, post_ceiling, post_naive, post_durable
    title: str
    method: str
    role: str  # BASELINE or TARGET
    tool: str
    connections: int
    rounds: list[Round]

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(r, attribute) for r in self.rounds)

    def median_batch(self, name: str) -> float | None:
        values = [r.batches[name] for r in self.rounds if name in r.batches]
        return statistics.median(values) if values else None

    def median_component(self, name: str) -> float:
        return statistics.median(r.components.get(name, 0.0) for r in self.rounds)

    def cache_hit_ratio(self) -> float | None:
        """HITs among the answers nginx logged with a cache status, over every round; None: no cache."""
        total = sum(n for r in self.rounds for n in r.cache.values())
        return sum(r.cache.get("HIT", 0) for r in self.rounds) / total if total else None

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    def ratio_to(self, base: Scenario, attribute: str = "requests_per_s") -> float:
        """Median of the per-round ratios: round i of each ran back to back, so drift cancels."""
        pairs = zip(self.rounds, base.rounds, strict=False)
        return statistics.median(getattr(a, attribute) / getattr(b, attribute) for a, b in pairs
                                 if getattr(b, attribute) > 0)


@dataclass(frozen=True)
class RequestStats:
    """locust's summary of one request name."""

    name: str
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class HistoryPoint:
    """locust's figures for one second of the run (percentiles over its recent window)."""

    t_s: float
    name: str
    requests_per_s: float
    failures_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class AuditRow:
    hour: int
    expected: tuple[int, int, int]  # unique_users, clicks, impressions acknowledged (204)
    counted: tuple[int, int, int]  # GET after minus GET before

    @property
    def missing_events(self) -> int:
        return max(0, self.expected[1] - self.counted[1]) + max(0, self.expected[2] - self.counted[2])


@dataclass(frozen=True)
class MixedRun:
    tool: str
    users: int
    rate_per_user: float
    seconds: float
    generator_cores: float
    generator_warnings: list[str]
    requests: list[RequestStats]
    history: list[HistoryPoint]
    failures: dict[str, int]  # error text -> occurrences
    acknowledged: int
    audit: list[AuditRow]
    audit_settled_s: float  # how long after the run the GETs matched (or the give-up time)
    components: dict[str, float] = field(default_factory=dict)

    @property
    def error_responses(self) -> int:
        return sum(r.failures for r in self.requests)

    @property
    def missing_events(self) -> int:
        return sum(a.missing_events for a in self.audit)

    @property
    def exact(self) -> bool:
        return all(a.expected == a.counted for a in self.audit)


@dataclass(frozen=True)
class Profile:
    """py-spy samples of one process while a scenario ran."""

    scenario: str
    process: str
    seconds: float
    busy_share: float  # samples with the process on CPU over samples taken
    top_self: list[tuple[str, float]]  # function, share of busy samples spent in it
    top_total: list[tuple[str, float]]  # function, share of busy samples with it on the stack
    stacks_file: str | None = None  # py-spy collapsed stacks beside the report (flamegraph.pl, speedscope)


@dataclass(frozen=True)
class BatchRun:
    """What one batch run measured (perf/batch_bench.py)."""

    events_per_batch: int
    concurrency: int
    seconds: float
    batches: int  # answered 200
    events_per_s: float  # durable events (200 answers' stored) per second
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]  # status (or exception) -> count
    generator_cores: float
    copy_rows_per_s: float
    single_post_per_s: float | None  # the single-POST path's events/s in the same run
    exact: bool  # the audit: the hour's GET equals what the 200s acknowledged
    audit: str
    components: dict[str, float] = field(default_factory=dict)

    @property
    def ratio_to_copy(self) -> float:
        return self.events_per_s / self.copy_rows_per_s if self.copy_rows_per_s else 0.0

    @property
    def ratio_to_single(self) -> float | None:
        return self.events_per_s / self.single_post_per_s if self.single_post_per_s else None

    def cpu_us_per_event(self) -> dict[str, float]:
        """CPU microseconds per durable event: each component's, the load generator's, and their sum."""
        if not self.events_per_s:
            return {}
        per = {name: cores * 1e6 / self.events_per_s for name, cores in self.components.items()}
        per[LOAD_GENERATOR] = self.generator_cores * 1e6 / self.events_per_s
        per[TOTAL] = sum(per.values())
        return per


@dataclass
class BenchResults:
    started: str  # ISO 8601, UTC
    machine: dict[str, str]
    config: dict[str, Any]
    scenarios: list[Scenario] = field(default_factory=list)
    mixed: MixedRun | None = None
    profiles: list[Profile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    batch: BatchRun | None = None

    def scenario(self, key: str) -> Scenario | None:
        return next((s for s in self.scenarios if s.key == key), None)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> BenchResults:
        raw = json.loads(path.read_text())
        mixed = raw["mixed"]
        return cls(
            started=raw["started"], machine=raw["machine"], config=raw["config"], notes=raw["notes"],
            scenarios=[Scenario(**{**s, "rounds": [Round(**r) for r in s["rounds"]]}) for s in raw["scenarios"]],
            mixed=None if mixed is None else MixedRun(**{
                **mixed,
                "requests": [RequestStats(**r) for r in mixed["requests"]],
                "history": [HistoryPoint(**h) for h in mixed["history"]],
                "audit": [AuditRow(a["hour"], tuple(a["expected"]), tuple(a["counted"])) for a in mixed["audit"]],
            }),
            profiles=[Profile(**{**p, "top_self": [tuple(t) for t in p["top_self"]],
                                 "top_total": [tuple(t) for t in p["top_total"]]}) for p in raw["profiles"]],
            batch=BatchRun(**raw["batch"]) if raw.get("batch") else None,
        )
