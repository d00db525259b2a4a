"""Where a Python process spends its CPU under load: py-spy samples, summarised by function."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from perf.results import Profile

# Samples per second: enough for a 10-second profile, cheap with --nonblocking.
SAMPLE_RATE = 200
# Functions listed per profile.
TOP = 10
# Frames on every stack (the entry point, the event loop) say nothing about where time goes.
ENTRY_FRAMES = ("<module> ", "_run_code ", "_run_module_as_main ", "main (", "run_app (", "run_forever (",
                "run_until_complete (", "run (asyncio")


def py_spy() -> str | None:
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


def collapse(raw: str) -> Counter[tuple[str, ...]]:
    """py-spy's raw format: ``frame;frame;...;leaf count`` per line."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def summarize(stacks: Counter[tuple[str, ...]]) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """(samples, top functions by self time, top functions by time on the stack), shares of samples."""
    total = sum(stacks.values())
    if total == 0:
        return 0, [], []
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks.items():
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    telling = [(f, n) for f, n in inclusive.most_common() if not f.startswith(ENTRY_FRAMES)]
    return (total, [(f, n / total) for f, n in own.most_common(TOP)],
            [(f, n / total) for f, n in telling[:TOP]])


def profile_while(pid: int, process: str, scenario: str, seconds: int, out: Path,
                  load: Callable[[], object]) -> Profile | None:
    """Sample ``pid`` for ``seconds`` while ``load()`` runs; None if py-spy is missing or failed."""
    binary = py_spy()
    if binary is None:
        return None
    argv = [binary, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(SAMPLE_RATE),
            "--nonblocking", "--nolineno", "--format", "raw", "--output", str(out)]
    with open(out.with_suffix(".log"), "w") as log:
        sampler = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            load()
        finally:
            sampler.wait(timeout=seconds + 30)
    if sampler.returncode != 0 or not out.exists():
        return None
    samples, top_self, top_total = summarize(collapse(out.read_text()))
    return Profile(scenario=scenario, process=process, seconds=seconds,
                   busy_share=min(1.0, samples / (SAMPLE_RATE * seconds)), top_self=top_self, top_total=top_total,
                   stacks_file=out.name)
