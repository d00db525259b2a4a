"""The benchmark report: markdown tables and PNG charts from a BenchResults.

    python -m perf.report perf/results/<timestamp>/results.json   # re-render a report
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from perf.charts import draw_charts
from perf.procs import SATURATED_CORE_SHARE
from perf.results import (
    GET_CEILING,
    GET_CURRENT,
    IDLE_STACKS,
    OTHER,
    POST_CEILING,
    POST_CEILING_UNIX,
    POST_DURABLE,
    POST_NAIVE,
    SOFTIRQ,
    BatchRun,
    BenchResults,
    MixedRun,
    Profile,
    Scenario,
)

# The performance goals (not test assertions; docs/performance.md): ratios to the
# same-run baselines. The GET ceiling is nginx in front of trivial aiohttp with the
# GET cache off, so the GET goal is what the cache must add.
GET_MIN_RATIO_TO_CEILING = 2.5
GET_MAX_P99_MS = 5.0
POST_MIN_RATIO_TO_NAIVE = 3.0
POST_MIN_RATIO_TO_CEILING = 0.5
POST_MAX_P99_MS = 25.0
# Cores used by processes outside the bench above which the report warns.
# Batches of 1,000 events at the default 3 shards (issue 20; docs/performance.md).
BATCH_MIN_EVENTS_PER_S = 100_000
BATCH_MIN_RATIO_TO_SINGLE = 20.0
BATCH_MAX_P99_MS = 100.0
BUSY_MACHINE_CORES = 0.25
# CPU columns that are not the system under test.
NOT_UNDER_TEST = frozenset({OTHER, SOFTIRQ, IDLE_STACKS})
# Which baselines each figure is quoted against.
BASELINES_OF = {GET_CURRENT: (GET_CEILING,), POST_CEILING_UNIX: (POST_CEILING,), POST_NAIVE: (POST_CEILING,),
                POST_DURABLE: (POST_NAIVE, POST_CEILING, POST_CEILING_UNIX)}


@dataclass(frozen=True)
class TargetCheck:
    method: str  # GET, POST or mixed: whose processes to profile when it is missed
    goal: str
    measured: str
    met: bool | None  # None: not measured in this run


def ratio_check(results: BenchResults, key: str, base: str, minimum: float, goal: str) -> TargetCheck:
    figure, baseline = results.scenario(key), results.scenario(base)
    if figure is None or baseline is None:
        return TargetCheck(key.split("_")[0].upper(), goal, "not measured", None)
    ratio = figure.ratio_to(baseline)
    return TargetCheck(figure.method, goal, f"{ratio:.2f}x ({figure.median('requests_per_s'):,.0f} vs "
                             f"{baseline.median('requests_per_s'):,.0f} req/s)", ratio >= minimum)


def p99_check(results: BenchResults, key: str, maximum: float, goal: str) -> TargetCheck:
    figure = results.scenario(key)
    if figure is None:
        return TargetCheck(key.split("_")[0].upper(), goal, "not measured", None)
    p99 = figure.median("p99_ms")
    return TargetCheck(figure.method, goal, f"{p99:.1f} ms at {figure.connections} connections", p99 < maximum)


def mixed_checks(mixed: MixedRun | None) -> list[TargetCheck]:
    if mixed is None:
        return [TargetCheck("mixed", "mixed: no error responses", "not measured", None),
                TargetCheck("mixed", "mixed: every 204 counted", "not measured", None)]
    exact = "exact" if mixed.exact else "not exact: see the audit"
    return [
        TargetCheck("mixed", "mixed: no error responses", f"{mixed.error_responses} errors in "
                    f"{sum(r.requests for r in mixed.requests):,} requests", mixed.error_responses == 0),
        TargetCheck("mixed", "mixed: every 204 counted", f"{mixed.acknowledged:,} acknowledged, {mixed.missing_events} "
                    f"missing ({exact})", mixed.missing_events == 0 and mixed.acknowledged > 0),
    ]


def batch_checks(run: BatchRun | None) -> list[TargetCheck]:
    goals = [f"batches of 1,000 >= {BATCH_MIN_EVENTS_PER_S:,} durable events/s",
             f"batches >= {BATCH_MIN_RATIO_TO_SINGLE:g}x the single-POST path (events/s)",
             f"batch p99 < {BATCH_MAX_P99_MS:g} ms", "batches: every acknowledged event counted"]
    if run is None:
        return [TargetCheck("batch", goal, "not measured", None) for goal in goals]
    ratio = run.ratio_to_single
    return [
        TargetCheck("batch", goals[0], f"{run.events_per_s:,.0f} events/s "
                    f"({run.events_per_s / BATCH_MIN_EVENTS_PER_S:.0%} of the target)",
                    run.events_per_s >= BATCH_MIN_EVENTS_PER_S),
        TargetCheck("batch", goals[1], "not measured" if ratio is None else
                    f"{ratio:.1f}x ({run.single_post_per_s:,.0f} single-POST events/s)",
                    None if ratio is None else ratio >= BATCH_MIN_RATIO_TO_SINGLE),
        TargetCheck("batch", goals[2], f"{run.p99_ms:.1f} ms at {run.concurrency} client loops",
                    run.p99_ms < BATCH_MAX_P99_MS),
        TargetCheck("batch", goals[3], run.audit, run.exact),
    ]


def batch_summary(run: BatchRun) -> list[str]:
    single = f"{run.ratio_to_single:.1f}x the single-POST path ({run.single_post_per_s:,.0f} events/s)" \
        if run.ratio_to_single is not None else "single-POST path not measured"
    return [
        f"batches of {run.events_per_batch} events, {run.concurrency} client loops, {run.seconds:g} s: "
        f"{run.events_per_s:,.0f} durable events/s ({run.batches} batches answered 200), "
        f"p50 {run.p50_ms:.1f} ms, p99 {run.p99_ms:.1f} ms, errors {run.errors or 'none'}",
        f"{single}; COPY into one table: {run.copy_rows_per_s:,.0f} rows/s, batches at "
        f"{run.ratio_to_copy:.2f}x of it",
        f"load generator {run.generator_cores:.2f} cores; audit: {'exact' if run.exact else 'NOT exact'} "
        f"({run.audit})",
        *cpu_per_event_line(run),
    ]


def cpu_per_event_line(run: BatchRun) -> list[str]:
    """Where an event's CPU went: each component's microseconds per durable event (none if nothing was stored)."""
    per = run.cpu_us_per_event()
    if not per or not run.components:
        return []
    return ["CPU per durable event (µs): " + ", ".join(f"{name} {us:.1f}" for name, us in per.items())]


def batch_section(run: BatchRun) -> Iterator[str]:
    yield from (f"- {line}" for line in batch_summary(run))
    yield "- CPU (cores): " + ", ".join(f"{name} {cores:.2f}" for name, cores in run.components.items())


def evaluate(results: BenchResults) -> list[TargetCheck]:
    """Each performance goal (docs/performance.md) against this run's figures."""
    return [
        ratio_check(results, GET_CURRENT, GET_CEILING, GET_MIN_RATIO_TO_CEILING,
                    f"GET current hour >= {GET_MIN_RATIO_TO_CEILING}x GET ceiling"),
        p99_check(results, GET_CURRENT, GET_MAX_P99_MS, f"GET current hour p99 < {GET_MAX_P99_MS:g} ms"),
        ratio_check(results, POST_DURABLE, POST_NAIVE, POST_MIN_RATIO_TO_NAIVE,
                    f"POST durable >= {POST_MIN_RATIO_TO_NAIVE:g}x batching disabled"),
        ratio_check(results, POST_DURABLE, POST_CEILING, POST_MIN_RATIO_TO_CEILING,
                    f"POST durable >= {POST_MIN_RATIO_TO_CEILING}x POST ceiling"),
        p99_check(results, POST_DURABLE, POST_MAX_P99_MS, f"POST durable p99 < {POST_MAX_P99_MS:g} ms"),
        *mixed_checks(results.mixed),
        *batch_checks(results.batch),
    ]


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def targets_table(results: BenchResults) -> Iterator[str]:
    yield "| target | measured (median of rounds) | |"
    yield "|---|---|---|"
    for check in evaluate(results):
        yield f"| {check.goal} | {check.measured} | {verdict(check.met)} |"


def ratio_text(results: BenchResults, scenario: Scenario) -> str:
    parts = []
    for base_key in BASELINES_OF.get(scenario.key, ()):
        base = results.scenario(base_key)
        if base is not None:
            parts.append(f"{scenario.ratio_to(base):.2f}x {base.title}")
    return "; ".join(parts) or "baseline"


def saturated(cores: float) -> str:
    return " (saturated)" if cores >= SATURATED_CORE_SHARE else ""


def figures_table(results: BenchResults) -> Iterator[str]:
    yield "| scenario | tool | req/s | vs same-run baseline | p50 ms | p99 ms | errors | generator CPU |"
    yield "|---|---|---|---|---|---|---|---|"
    for s in results.scenarios:
        cores = max(r.generator_cores for r in s.rounds)
        yield (f"| {s.title} | {s.tool} -c {s.connections} | {s.median('requests_per_s'):,.0f} | "
               f"{ratio_text(results, s)} | {s.median('p50_ms'):.2f} | {s.median('p99_ms'):.2f} | {s.errors} | "
               f"{cores:.2f} cores{saturated(cores)} |")


def cache_table(results: BenchResults) -> Iterator[str]:
    yield "| scenario | nginx GET cache hit ratio | answers by cache status (all rounds) |"
    yield "|---|---|---|"
    for s in results.scenarios:
        if s.method == "GET":
            ratio = s.cache_hit_ratio()
            statuses = Counter[str]()
            for r in s.rounds:
                statuses.update(r.cache)
            shown = ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items())) or "none logged (cache off)"
            yield f"| {s.title} | {'off' if ratio is None else f'{100 * ratio:.2f}%'} | {shown} |"


def ratios_table(results: BenchResults) -> Iterator[str]:
    yield "| figure | against | throughput | p50 latency | p99 latency |"
    yield "|---|---|---|---|---|"
    for key, bases in BASELINES_OF.items():
        figure = results.scenario(key)
        for base in filter(None, (results.scenario(b) for b in bases)):
            if figure is not None:
                yield (f"| {figure.title} | {base.title} | {figure.ratio_to(base):.2f}x | "
                       f"{figure.ratio_to(base, 'p50_ms'):.2f}x | {figure.ratio_to(base, 'p99_ms'):.2f}x |")


def service_cpu_us(s: Scenario) -> float:
    """CPU the system under test's processes spent per request (microseconds): robust to a busy machine."""
    cores = sum(s.median_component(n) for n in {n for r in s.rounds for n in r.components} - NOT_UNDER_TEST)
    return cores / max(s.median("requests_per_s"), 1e-9) * 1e6


def cpu_table(results: BenchResults) -> Iterator[str]:
    names = sorted({n for s in results.scenarios for r in s.rounds for n in r.components} - NOT_UNDER_TEST)
    if not names:
        return
    yield ("| scenario | " + " | ".join(names) + " | kernel softirq (loopback network) | load generator | "
           "the bench's idle stacks | other processes |")
    yield "|---|" + "---|" * (len(names) + 4)
    for s in results.scenarios:
        cells = [f"{s.median_component(n):.2f}" for n in names]
        yield (f"| {s.title} | " + " | ".join(cells) + f" | {s.median_component(SOFTIRQ):.2f} | "
               f"{s.median('generator_cores'):.2f} | {s.median_component(IDLE_STACKS):.2f} | "
               f"{s.median_component(OTHER):.2f} |")


def cost_table(results: BenchResults) -> Iterator[str]:
    """CPU microseconds per request, by component: where a slower path spends what the ceiling does not."""
    names = sorted({n for s in results.scenarios for r in s.rounds for n in r.components} - NOT_UNDER_TEST)
    if not names:
        return
    yield "| scenario | " + " | ".join(names) + " | all |"
    yield "|---|" + "---|" * (len(names) + 1)
    for s in results.scenarios:
        rps = max(s.median("requests_per_s"), 1e-9)
        cells = [f"{s.median_component(n) / rps * 1e6:.0f}" if s.median_component(n) > 0 else "" for n in names]
        yield f"| {s.title} | " + " | ".join(cells) + f" | {service_cpu_us(s):.0f} |"


def batches_table(results: BenchResults) -> Iterator[str]:
    rows = [(s, s.median_batch("events_per_batch"), s.median_batch("commit_ms")) for s in results.scenarios]
    rows = [(s, size, ms) for s, size, ms in rows if size is not None and ms is not None]
    if not rows:
        return
    yield "| scenario | events per commit | commit ms (mean) |"
    yield "|---|---|---|"
    for s, size, ms in rows:
        yield f"| {s.title} | {size:.1f} | {ms:.2f} |"


def mixed_section(mixed: MixedRun) -> Iterator[str]:
    yield (f"{mixed.tool}, {mixed.users} users at {mixed.rate_per_user:g} req/s each for {mixed.seconds:g} s "
           f"(FastHttpUser; locust reports whole milliseconds). Load generator: {mixed.generator_cores:.2f} cores"
           f"{saturated(mixed.generator_cores)}.")
    yield ""
    yield "| request | count | errors | req/s | p50 ms | p99 ms |"
    yield "|---|---|---|---|---|---|"
    for r in mixed.requests:
        yield f"| {r.name} | {r.requests:,} | {r.failures} | {r.requests_per_s:,.0f} | {r.p50_ms:g} | {r.p99_ms:g} |"
    yield ""
    for error, count in mixed.failures.items():
        yield f"- error `{error}`: {count}"
    for warning in mixed.generator_warnings:
        yield f"- locust warned: `{warning}`"
    yield ""
    yield (f"Audit: every 204 the load generator got, per hour, against the GETs through nginx after the run "
           f"minus before it (settled {mixed.audit_settled_s:.1f} s after the run). "
           "Columns are unique users / clicks / impressions.")
    yield ""
    yield "| hour (UTC, hours since epoch) | acknowledged | counted | |"
    yield "|---|---|---|---|"
    exact = [a for a in mixed.audit if a.expected == a.counted]
    # The busiest hour (the current one) in full, every hour that is off, and a count of the rest.
    shown = {max(mixed.audit, key=lambda a: a.expected[1] + a.expected[2]).hour} if mixed.audit else set()
    for a in mixed.audit:
        if a.hour in shown or a.expected != a.counted:
            ok = "exact" if a.expected == a.counted else (f"**{a.missing_events} missing**" if a.missing_events
                                                          else "more (a request that failed was committed)")
            yield f"| {a.hour} | {'/'.join(map(str, a.expected))} | {'/'.join(map(str, a.counted))} | {ok} |"
    rest = [a for a in exact if a.hour not in shown]
    if rest:
        events = sum(a.expected[1] + a.expected[2] for a in rest)
        yield f"| {len(rest)} other hours (late writes) | {events} events | {events} events | all exact |"


def profile_section(profile: Profile) -> Iterator[str]:
    yield (f"**{profile.process}** during *{profile.scenario}* ({profile.seconds:g} s, on CPU in "
           f"{profile.busy_share:.0%} of samples)" + (f", stacks: [{profile.stacks_file}]({profile.stacks_file})"
                                                       if profile.stacks_file else ""))
    yield ""
    yield "| function (self time) | share | function (on the stack) | share |"
    yield "|---|---|---|---|"
    for (own, own_share), (total, total_share) in zip(profile.top_self, profile.top_total, strict=False):
        yield f"| `{own}` | {own_share:.0%} | `{total}` | {total_share:.0%} |"
    yield ""


def contention_notes(results: BenchResults) -> Iterator[str]:
    busy = max((s.median_component(OTHER) for s in results.scenarios), default=0.0)
    if busy >= BUSY_MACHINE_CORES:
        yield (f"- **Other processes on this machine used up to {busy:.2f} cores during the rounds** (column \"other "
               "processes\"): absolute figures are depressed; the same-run ratios and the CPU per request "
               "are the figures to compare.")


def generator_notes(results: BenchResults) -> Iterator[str]:
    for s in results.scenarios:
        cores = max(r.generator_cores for r in s.rounds)
        if cores >= SATURATED_CORE_SHARE:
            yield (f"- **{s.title}: wrk used {cores:.2f} cores (one thread): the generator may have set the pace, "
                   "so this figure is a lower bound.**")
    if results.mixed and results.mixed.generator_cores >= SATURATED_CORE_SHARE:
        yield (f"- **mixed: locust used {results.mixed.generator_cores:.2f} cores: it saturated its core, so its "
               "latencies include its own queueing.**")


def render_markdown(results: BenchResults) -> str:
    c, m = results.config, results.machine
    lines = [
        f"# Reactions benchmark, {results.started}",
        "",
        f"Machine: {m.get('cpus', '?')} cores shared by everything (nginx, Python services, PostgreSQL, the load "
        f"generator); {m.get('python', '')}; {m.get('nginx', '')}; {m.get('postgres', '')}; {m.get('wrk', '')}; "
        f"locust {m.get('locust', '?')}.",
        f"Cluster: {c.get('shards')} shards, {c.get('aggregators')} aggregators, one nginx "
        f"({c.get('cluster', 'local')}"
        + (f"; services' extra environment: `{c['service_env']}`" if c.get("service_env") else "")
        + f"). Command: `{c.get('command', 'make bench')}`.",
        "",
        f"Method: wrk (C, one thread, {c.get('connections')} connections) measures every throughput and latency "
        f"figure; each scenario ran {c.get('rounds')} rounds of {c.get('seconds')} s after a warm-up, and the rounds "
        "of all scenarios were interleaved (round 1 of each, then round 2, ...). Figures are medians of the rounds; "
        "ratios are medians of per-round ratios, so slow drift of the machine cancels. Baselines ran in this same "
        "run behind an nginx rendered from the same template (sharding/nginx.py): only the backends differ. "
        "locust drives the realistic mixed scenario and its audit.",
        "",
        "## Targets",
        "",
        *targets_table(results),
        "",
        "## Throughput and latency",
        "",
        *figures_table(results),
        "",
        "![throughput](throughput.png) ![latency](latency.png)",
        "",
        "### nginx's GET cache (docs/operations.md, nginx: the GET cache)",
        "",
        *cache_table(results),
        "",
        "### Ratios to the same-run baselines",
        "",
        *ratios_table(results),
        "",
        "### Where the CPU went (cores, median of rounds)",
        "",
        *cpu_table(results),
        "",
        "### CPU µs per request, by component",
        "",
        *cost_table(results),
        "",
        "### Writer batches (the writers' own /metrics, median of rounds)",
        "",
        *batches_table(results),
        "",
        "![rounds over time](over_time.png)",
        "",
    ]
    if results.batch is not None:
        lines += ["## Batches (POST /analytics/batch, perf/batch_bench.py)", "", *batch_section(results.batch), ""]
    if results.mixed is not None:
        lines += ["## Mixed scenario", "", *mixed_section(results.mixed), "", "![mixed](mixed_over_time.png)", ""]
    if results.profiles:
        lines += ["## Profiles (py-spy)", "",
                  "py-spy sees Python frames only: self time of `run_app` is the event loop's C code (uvloop, "
                  "socket reads and writes, the C HTTP parser) that runs under it.", ""]
        for profile in results.profiles:
            lines += list(profile_section(profile))
    lines += ["## Load generator and machine", "", *generator_notes(results), *contention_notes(results),
              "- wrk: throughput/latency scenarios; locust: mixed scenario and audit.", ""]
    if results.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in results.notes), ""]
    return "\n".join(lines)


def write_report(results: BenchResults, directory: Path) -> Path:
    """results.json, report.md and the PNG charts in ``directory``; returns the report's path."""
    directory.mkdir(parents=True, exist_ok=True)
    results.save(directory / "results.json")
    draw_charts(results, directory)
    report = directory / "report.md"
    report.write_text(render_markdown(results))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    print(write_report(BenchResults.load(args.results), args.results.parent))


if __name__ == "__main__":
    main()
