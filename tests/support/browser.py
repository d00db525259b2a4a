"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium, for the dashboard tests.

scripts/system-deps.sh installs both; Selenium is pointed at them, so nothing
is downloaded. We run as root, so Chromium runs with ``--no-sandbox``, in a
temporary profile. Every wait is bounded: starting chromedriver, each
WebDriver command, a page load, and the stop, which ends chromedriver and
every process it started by PID (SIGKILL for any still there after the bound).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chromium.remote_connection import ChromiumRemoteConnection
from selenium.webdriver.remote.client_config import ClientConfig

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# One WebDriver command (a click, a script, a screenshot) answers within this on a loaded machine.
COMMAND_TIMEOUT_S = 30
# Loading the dashboard (three small files from loopback).
PAGE_LOAD_TIMEOUT_S = 20
# After quit, chromedriver and Chromium's processes are gone within this, or are killed.
STOP_TIMEOUT_S = 10.0
LAPTOP = (1280, 800)
PHONE = (390, 844)
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",  # root: Chromium refuses to start sandboxed
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",  # nothing beyond the page's own requests
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (from /proc), children first."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"  # a zombie has exited; its parent reaps it


def stop_pids(pids: list[int], timeout_s: float) -> None:
    """Wait for ``pids`` to exit; SIGKILL whichever is still there after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(gone(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if not gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def chromium_options(profile: Path, window: tuple[int, int]) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"):
        options.add_argument(arg)
    return options


@contextlib.contextmanager
def headless_chromium(window: tuple[int, int] = LAPTOP) -> Iterator[webdriver.Remote]:
    """A Chromium session in a fresh profile; everything it started is stopped on the way out."""
    profile = Path(tempfile.mkdtemp(prefix="reactions-chromium-"))
    service = Service(CHROMEDRIVER)
    service.start()
    driver_pid = service.process.pid
    try:
        connection = ChromiumRemoteConnection(
            remote_server_addr=service.service_url, vendor_prefix="goog", browser_name="chrome",
            client_config=ClientConfig(remote_server_addr=service.service_url, timeout=COMMAND_TIMEOUT_S))
        driver = webdriver.Remote(command_executor=connection, options=chromium_options(profile, window))
        try:
            driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
            driver.set_script_timeout(COMMAND_TIMEOUT_S)
            yield driver
        finally:
            browser = descendants(driver_pid)
            with contextlib.suppress(Exception):  # a browser that no longer answers is killed below
                driver.quit()
            stop_pids(browser, STOP_TIMEOUT_S)
    finally:
        browser = descendants(driver_pid)
        service.stop()
        stop_pids([driver_pid, *browser], STOP_TIMEOUT_S)
        shutil.rmtree(profile, ignore_errors=True)
