"""Running wrk (a C load generator, so that the load is not the bottleneck) and reading its figures."""

from __future__ import annotations

import re
import shutil
import statistics
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from perf.procs import run_measured

# Reactions' write path: the path form with a user from a fixed population and
# the current timestamp (5% of writes are late: an hour or more in the past).
POST_SCRIPT = """
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
local users = %(users)d
request = function()
  local ts = os.time() * 1000
  if math.random(100) <= 5 then ts = ts - math.random(1, 48) * 3600000 end
  local event = (math.random(10) <= 3) and "click" or "impression"
  return wrk.format("POST", "/analytics/" .. ts .. "/user" .. math.random(users) .. "/" .. event)
end
"""

GET_SCRIPT = """
request = function()
  return wrk.format("GET", "/analytics?timestamp=" .. (os.time() * 1000))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors plus non-2xx answers
    # Cores wrk itself used (user + system CPU over wall time); a thread near
    # 1.0 means wrk, not the server, set the pace.
    generator_cores: float = 0.0


def require_wrk() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    return found


def run_wrk(url: str, script: str, *, seconds: float, connections: int, threads: int = 1) -> WrkResult:
    """One bounded wrk run against ``url`` (loopback only)."""
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError("benchmarks target 127.0.0.1 only")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    try:
        run = run_measured(
            [require_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--latency",
             "-s", lua.name, url],
            timeout_s=seconds + 30,
        )
    finally:
        Path(lua.name).unlink()
    if run.returncode != 0:
        raise RuntimeError(f"wrk exited with {run.returncode}:\n{run.stdout}")
    return replace(parse(run.stdout), generator_cores=run.cores)


def parse(out: str) -> WrkResult:
    def latency(pct: str) -> float:
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            raise ValueError(f"no {pct}% latency in wrk output:\n{out}")
        return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(rps, latency("50"), latency("99"), total, errors + (int(non2xx[1]) if non2xx else 0))


def median_result(results: list[WrkResult]) -> WrkResult:
    return WrkResult(
        requests_per_s=statistics.median(r.requests_per_s for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        generator_cores=max(r.generator_cores for r in results),
    )
