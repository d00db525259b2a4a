"""What the dashboard page shows, read in one script run, and the API answers it should equal."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from selenium import webdriver

from common.hours import MS_PER_HOUR, hour_of, hour_start_ms, now_ms
from tests.support.cluster import post

# The page polls once a second; the API's live hour is unmarked only while it
# counts every event acknowledged 2 s before (docs/design.md, Invariants 5).
POLL_S = 1.0
STALENESS_BOUND_S = 2.0
# A copy of the screenshot goes here too when set (how docs/dashboard.png is made).
SCREENSHOT_ENV = "REACTIONS_DASHBOARD_SCREENSHOT"
CHART_HOURS = 24
# Posts in flight at once while filling the hours.
POST_CONCURRENCY = 32

PAGE_STATE = """
const text = (id) => document.getElementById(id).textContent;
const chart = document.getElementById("chart");
const svg = chart.querySelector("svg");
const series = {};
if (svg) for (const line of svg.querySelectorAll("polyline")) series[line.dataset.series] = line.dataset.values;
return {
  counts: ["unique-users", "clicks", "impressions"].map(text),
  live: document.getElementById("live-status").dataset.state,
  live_text: text("live-status"),
  chart: chart.dataset.state || "",
  chart_text: text("chart-status"),
  chart_hours: svg ? Number(svg.dataset.hours) : 0,
  series: series,
  resources: performance.getEntriesByType("resource").map((e) => e.name),
  scroll_width: document.documentElement.scrollWidth,
  inner_width: window.innerWidth,
  count_lefts: [...document.querySelectorAll(".count")].map((e) => Math.round(e.getBoundingClientRect().left)),
  svg_width: svg ? svg.getBoundingClientRect().width : 0,
};
"""


@dataclass(frozen=True)
class PageState:
    """The dashboard as a reader sees it."""

    counts: tuple[int, int, int] | None  # None until numbers are shown
    live: str  # live, stale, incomplete, loading
    live_text: str
    chart: str  # complete, stale, incomplete, "" before the first chart
    chart_text: str
    chart_hours: int
    series: dict[str, list[int]]
    resources: list[str]
    fits_width: bool
    stacked: bool  # the three counts one above the other (a phone)


def parse_count(text: str) -> int | None:
    digits = text.replace(",", "")
    return int(digits) if digits.isdigit() else None


def page_state(driver: webdriver.Remote) -> PageState:
    raw: dict[str, Any] = driver.execute_script(PAGE_STATE)
    numbers = [parse_count(t) for t in raw["counts"]]
    counts = (numbers[0], numbers[1], numbers[2]) if None not in numbers else None
    series = {name: [int(v) for v in values.split(",")] for name, values in raw["series"].items()}
    return PageState(counts, raw["live"], raw["live_text"], raw["chart"], raw["chart_text"], raw["chart_hours"],
                     series, raw["resources"], raw["scroll_width"] <= raw["inner_width"],
                     len(set(raw["count_lefts"])) == 1)


async def api_counts(session: aiohttp.ClientSession, base: str, hour: int) -> tuple[int, int, int] | None:
    """The one-hour GET through nginx, as the page asks it; None unless a 200 without a stale mark."""
    async with session.get(f"{base}/analytics?timestamp={hour_start_ms(hour)}") as resp:
        if resp.status != 200 or "X-Reactions-Stale" in resp.headers:
            return None
        lines = dict(line.split(",") for line in (await resp.text()).splitlines())
        return int(lines["unique_users"]), int(lines["clicks"]), int(lines["impressions"])


async def api_series(session: aiohttp.ClientSession, base: str, last_hour: int) -> dict[str, list[int]] | None:
    """The page's chart as the API answers it: each column of the last 24 hours' series."""
    first = last_hour - CHART_HOURS + 1
    async with session.get(f"{base}/analytics/series?from={hour_start_ms(first)}&to={hour_start_ms(last_hour)}") \
            as resp:
        if resp.status != 200:
            return None
        header, *rows = (await resp.text()).splitlines()
    names = header.split(",")
    columns = list(zip(*(row.split(",") for row in rows), strict=True))
    return {name: [int(v) for v in column] for name, column in zip(names, columns, strict=True)
            if name != "hour_start_ms"}


@dataclass(frozen=True)
class HourTraffic:
    """Events to post into one hour: every user clicks, the first ``repeats`` twice, the first ``viewers`` view."""

    hour: int
    users: int
    viewers: int
    repeats: int = 0

    @property
    def counts(self) -> tuple[int, int, int]:
        return self.users, self.users + self.repeats, self.viewers


async def post_traffic(session: aiohttp.ClientSession, base: str, traffic: list[HourTraffic], tag: str) -> None:
    """Post every event (all must be acknowledged); the current hour's at the current time."""
    current, limit = hour_of(now_ms()), asyncio.Semaphore(POST_CONCURRENCY)

    async def one(url: str) -> None:
        async with limit:
            status = await post(session, url)
        assert status == 204, f"{url}: {status}"

    urls = []
    for t in traffic:
        ts = now_ms() if t.hour == current else hour_start_ms(t.hour) + MS_PER_HOUR // 2
        urls += [f"{base}/analytics/{ts}/{tag}-{t.hour}-{i}/click" for i in [*range(t.users), *range(t.repeats)]]
        urls += [f"{base}/analytics/{ts}/{tag}-{t.hour}-{i}/impression" for i in range(t.viewers)]
    await asyncio.gather(*(one(url) for url in urls))


def save_screenshot(driver: webdriver.Remote, path: Path, publish: bool = False) -> Path:
    """A PNG of the page; the one to ``publish`` is copied to $REACTIONS_DASHBOARD_SCREENSHOT too, if set."""
    assert driver.save_screenshot(str(path)), "no screenshot"
    extra = os.environ.get(SCREENSHOT_ENV)
    if extra and publish:
        shutil.copyfile(path, extra)
    return path
