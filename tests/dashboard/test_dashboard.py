"""The dashboard in a real browser (headless Chromium) against a real cluster through nginx."""

from __future__ import annotations

import math
import time
from pathlib import Path

import aiohttp
from selenium import webdriver

from common.hours import hour_of, hour_start_ms, now_ms
from sharding.local.cluster import LocalCluster
from tests.support.browser import LAPTOP, PHONE
from tests.support.cluster import base_url, topology
from tests.support.dashboard import (
    POLL_S,
    STALENESS_BOUND_S,
    HourTraffic,
    PageState,
    api_counts,
    api_series,
    page_state,
    post_traffic,
    save_screenshot,
)
from tests.support.freeze import frozen
from tests.waiting import wait_until

# Long enough for a loaded machine to start polling and settle.
SETTLE_S = 30.0
# Posting near the end of an hour could split the events over two hours.
TURN_MARGIN_MS = 20_000


async def away_from_the_turn() -> int:
    """The current hour, once at least TURN_MARGIN_MS remain in it (waits at most that long)."""
    await wait_until(lambda: hour_start_ms(hour_of(now_ms()) + 1) - now_ms() > TURN_MARGIN_MS,
                     "an hour with time left in it", deadline_s=TURN_MARGIN_MS / 1000 + 5, poll_s=0.5)
    return hour_of(now_ms())


def a_day_of_traffic(current: int) -> list[HourTraffic]:
    """A day's shape over the last 23 hours (one of them empty), and some events in the current one."""
    past = [HourTraffic(current - k, users=12 + round(8 * math.sin(k / 4)) + k % 3,
                        viewers=8 + round(5 * math.cos(k / 5)), repeats=5 + k % 4) for k in range(1, 24) if k != 9]
    return [*past, HourTraffic(current, users=9, viewers=5, repeats=3)]


async def test_the_page_shows_the_apis_answers_and_follows_new_posts(cluster: LocalCluster,
                                                                     browser: webdriver.Remote,
                                                                     tmp_path: Path) -> None:
    base, current = base_url(cluster), await away_from_the_turn()
    async with aiohttp.ClientSession() as session:
        traffic = a_day_of_traffic(current)
        await post_traffic(session, base, traffic, "seen")
        expected = traffic[-1].counts
        browser.get(f"{base}/")
        seen: list[PageState] = []

        async def page_equals_api() -> bool:
            seen[:] = [page_state(browser)]
            api, chart = await api_counts(session, base, current), await api_series(session, base, current)
            return (api == expected and seen[0].counts == api and seen[0].live == "live"
                    and seen[0].chart == "complete" and seen[0].series == chart)

        await wait_until(page_equals_api, f"the page to show {expected} and the API's series", SETTLE_S, POLL_S / 4)
        page = seen[0]
        assert page.chart_hours == 24 and page.series["clicks"][-1] == expected[1]
        assert all(url.startswith(f"{base}/") for url in page.resources), f"beyond the entry point: {page.resources}"
        screenshot = save_screenshot(browser, tmp_path / "dashboard.png", publish=True)
        assert screenshot.stat().st_size > 10_000

        await post_traffic(session, base, [HourTraffic(current, users=4, viewers=3)], "more")
        acknowledged = time.monotonic()
        more = (expected[0] + 4, expected[1] + 4, expected[2] + 3)

        def page_followed() -> bool:
            return page_state(browser).counts == more

        await wait_until(page_followed, f"the page to follow to {more} within the staleness bound and one poll",
                         STALENESS_BOUND_S + POLL_S, poll_s=0.05)
        assert time.monotonic() - acknowledged <= STALENESS_BOUND_S + POLL_S + 0.5
        assert await api_counts(session, base, current) == more


async def test_the_page_reads_on_a_phone_width_screen(cluster: LocalCluster, browser: webdriver.Remote,
                                                      tmp_path: Path) -> None:
    base = base_url(cluster)
    browser.set_window_size(*PHONE)
    try:
        browser.get(f"{base}/")
        seen: list[PageState] = []

        def laid_out() -> bool:
            seen[:] = [page_state(browser)]
            return seen[0].chart == "complete" and seen[0].counts is not None

        await wait_until(laid_out, "the page with its numbers and chart", SETTLE_S, POLL_S / 4)
        page = seen[0]
        assert page.fits_width, "no sideways scrolling on a phone"
        assert page.stacked, "the three numbers one above the other"
        save_screenshot(browser, tmp_path / "dashboard-phone.png")
    finally:
        browser.set_window_size(*LAPTOP)
    browser.get(f"{base}/")
    await wait_until(lambda: page_state(browser).chart == "complete", "the laptop layout", SETTLE_S, POLL_S / 4)
    assert not page_state(browser).stacked, "three numbers side by side on a laptop"


async def test_a_stale_answer_and_an_incomplete_series_show_their_marks(cluster: LocalCluster,
                                                                        browser: webdriver.Remote,
                                                                        tmp_path: Path) -> None:
    base, shard = base_url(cluster), topology(cluster).shards[0]
    browser.get(f"{base}/")
    await wait_until(lambda: page_state(browser).chart == "complete", "a complete chart first", SETTLE_S, POLL_S / 4)
    seen: list[PageState] = []
    with frozen(cluster.postgres(shard)):

        def marked() -> bool:
            seen[:] = [page_state(browser)]
            return seen[0].live == "stale" and seen[0].chart == "incomplete"

        await wait_until(marked, "the stale mark and the incomplete chart", SETTLE_S, POLL_S / 4)
        page = seen[0]
        assert page.live_text.startswith("stale since") and page.counts is not None, page.live_text
        assert f"shard {shard.name}" in page.chart_text, page.chart_text
        assert page.chart_hours == 24 and len(page.series) == 3, "the last chart is kept"
        save_screenshot(browser, tmp_path / "dashboard-stale.png")

    def whole_again() -> bool:
        state = page_state(browser)
        return state.live == "live" and state.chart == "complete"

    await wait_until(whole_again, "the marks gone once the shard answers again", SETTLE_S, POLL_S / 4)
