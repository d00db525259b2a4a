"""PNG charts of a BenchResults (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from perf.results import BASELINE, BenchResults, MixedRun

BASELINE_COLOR, TARGET_COLOR = "#9e9e9e", "#1f77b4"
DPI = 110


def save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def throughput_chart(results: BenchResults, path: Path) -> None:
    """Median req/s per scenario; the whiskers span the rounds."""
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [s.title for s in results.scenarios]
    medians = [s.median("requests_per_s") for s in results.scenarios]
    low = [m - min(r.requests_per_s for r in s.rounds) for m, s in zip(medians, results.scenarios, strict=True)]
    high = [max(r.requests_per_s for r in s.rounds) - m for m, s in zip(medians, results.scenarios, strict=True)]
    colors = [BASELINE_COLOR if s.role == BASELINE else TARGET_COLOR for s in results.scenarios]
    ax.barh(names, medians, xerr=[low, high], color=colors, capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel("requests/s (median of rounds; grey: same-run baselines)")
    ax.set_title("Throughput through nginx (wrk)")
    save(fig, path)


def latency_chart(results: BenchResults, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [s.title for s in results.scenarios]
    ys = range(len(names))
    ax.barh([y - 0.2 for y in ys], [s.median("p50_ms") for s in results.scenarios], height=0.4, label="p50")
    ax.barh([y + 0.2 for y in ys], [s.median("p99_ms") for s in results.scenarios], height=0.4, label="p99")
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds (median of rounds)")
    ax.set_title("Latency through nginx (wrk)")
    ax.legend()
    save(fig, path)


def over_time_chart(results: BenchResults, path: Path) -> None:
    """Every round at the time it ran: drift of the machine shows as a slope."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for s in results.scenarios:
        times = [r.started_s for r in s.rounds]
        top.plot(times, [r.requests_per_s for r in s.rounds], marker="o", label=s.title)
        bottom.plot(times, [r.p99_ms for r in s.rounds], marker="o", label=s.title)
    top.set_ylabel("requests/s")
    bottom.set_ylabel("p99 ms")
    bottom.set_xlabel("seconds since the bench started")
    top.set_title("Each round over the run")
    top.legend(fontsize="small")
    save(fig, path)


def plot_mixed(mixed: MixedRun, rate: Axes, latency: Axes) -> None:
    names = sorted({h.name for h in mixed.history})
    for name in names:
        points = [h for h in mixed.history if h.name == name]
        rate.plot([h.t_s for h in points], [h.requests_per_s for h in points], label=name)
    overall = [h for h in mixed.history if h.name == "Aggregated"]
    latency.plot([h.t_s for h in overall], [h.p50_ms for h in overall], label="p50")
    latency.plot([h.t_s for h in overall], [h.p99_ms for h in overall], label="p99")
    errors = [h for h in overall if h.failures_per_s > 0]
    if errors:
        rate.plot([h.t_s for h in errors], [h.failures_per_s for h in errors], "rx", label="errors/s")


def mixed_chart(mixed: MixedRun, path: Path) -> None:
    fig, (rate, latency) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    plot_mixed(mixed, rate, latency)
    rate.set_ylabel("requests/s")
    rate.set_title(f"Mixed scenario over time ({mixed.tool})")
    rate.legend(fontsize="small")
    latency.set_ylabel("ms (all requests)")
    latency.set_xlabel("seconds into the run")
    latency.legend(fontsize="small")
    save(fig, path)


def draw_charts(results: BenchResults, directory: Path) -> list[Path]:
    """Write the PNGs the report links to; returns their paths."""
    paths = []
    if results.scenarios:
        for name, draw in (("throughput", throughput_chart), ("latency", latency_chart),
                           ("over_time", over_time_chart)):
            paths.append(directory / f"{name}.png")
            draw(results, paths[-1])
    if results.mixed is not None and results.mixed.history:
        paths.append(directory / "mixed_over_time.png")
        mixed_chart(results.mixed, paths[-1])
    return paths
