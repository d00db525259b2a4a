"""Locust scenarios: the traffic Reactions is built for.

    .venv/bin/locust -f perf/locustfile.py --host http://127.0.0.1:8000            # web UI, mixed
    .venv/bin/locust -f perf/locustfile.py --host http://127.0.0.1:8000 --headless -u 50 -r 50 -t 30s

Scenarios, by user class or by tag:

- ``Reader``: GETs, 95% for the current hour, 5% for a random past hour
  (tags ``get``, ``current``, ``past``);
- ``Writer``: POSTs, 95% with the current timestamp, 5% historic, in all three
  URL forms, over a fixed population of usernames (tags ``post``,
  ``current``, ``past``);
- mixed: both classes together (the default when no class is named).

``--tags get`` or ``--tags post`` narrows the mixed scenario to one side. The
environment tunes it:

| variable | default | meaning |
|---|---|---|
| ``REACTIONS_USERS`` | 10000 | distinct usernames the writers draw from |
| ``REACTIONS_USER_PREFIX`` | ``user`` | prefix of those usernames (the bench makes it unique per run) |
| ``REACTIONS_PAST_HOURS`` | 48 | past reads and late writes go 1..N hours back |
| ``REACTIONS_RATE`` | 0 | requests per second per simulated user (0: no pause) |
| ``REACTIONS_READ_WEIGHT`` / ``REACTIONS_WRITE_WEIGHT`` | 1 / 1 | share of readers and writers in the mixed run |
| ``REACTIONS_LEDGER`` | unset | file where the run's acknowledged writes go at the end (for the audit) |

Every ``204`` a writer gets is recorded (hour, event, user) so that the run
can be audited against the GETs afterwards (perf/ledger.py). Record a ledger
only with a single locust process.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from locust import FastHttpUser, constant, constant_throughput, events, tag, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `perf` and `common`

from common.hours import MS_PER_HOUR
from perf.ledger import CLICK, IMPRESSION, HourCounts, Ledger

POPULATION = int(os.environ.get("REACTIONS_USERS", "10000"))
USER_PREFIX = os.environ.get("REACTIONS_USER_PREFIX", "user")
PAST_HOURS = int(os.environ.get("REACTIONS_PAST_HOURS", "48"))
RATE_PER_USER = float(os.environ.get("REACTIONS_RATE", "0"))
LEDGER_FILE = os.environ.get("REACTIONS_LEDGER")
# README: about 95% of reads and writes are for the current hour.
CURRENT_WEIGHT, PAST_WEIGHT = 95, 5
# A third of reactions are clicks (impressions are the common case).
CLICK_SHARE = 0.3

LEDGER = Ledger()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def past_ms() -> int:
    """A timestamp 1..PAST_HOURS hours ago: a late write or a read of history."""
    return now_ms() - random.randint(1, PAST_HOURS) * MS_PER_HOUR


def post_path(ts: int, user: str, event: str) -> str:
    """One of the three write forms of the HTTP contract, at random."""
    form = random.randrange(3)
    if form == 0:
        return f"/analytics/{ts}/{user}/{event}"
    if form == 1:
        return f"/analytics?timestamp={ts}&user={user}&event={event}"
    return f"/analytics?timestamp={ts}&user={user}&{event}"


class ReactionsUser(FastHttpUser):
    abstract = True
    wait_time = constant_throughput(RATE_PER_USER) if RATE_PER_USER > 0 else constant(0)

    def read(self, ts: int, name: str) -> None:
        with self.client.get(f"/analytics?timestamp={ts}", name=name, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            try:
                HourCounts.parse(resp.text or "")
            except (KeyError, ValueError):
                resp.failure(f"not a count body: {resp.text!r}")

    def write(self, ts: int, name: str) -> None:
        user = f"{USER_PREFIX}{random.randrange(POPULATION)}"
        event = CLICK if random.random() < CLICK_SHARE else IMPRESSION
        with self.client.post(post_path(ts, user, event), name=name, catch_response=True) as resp:
            if resp.status_code == 204:
                LEDGER.record(ts, user, event)
            else:
                resp.failure(f"status {resp.status_code}")


class Reader(ReactionsUser):
    weight = int(os.environ.get("REACTIONS_READ_WEIGHT", "1"))

    @tag("get", "current")
    @task(CURRENT_WEIGHT)
    def current_hour(self) -> None:
        self.read(now_ms(), "GET current hour")

    @tag("get", "past")
    @task(PAST_WEIGHT)
    def past_hour(self) -> None:
        self.read(past_ms(), "GET past hour")


class Writer(ReactionsUser):
    weight = int(os.environ.get("REACTIONS_WRITE_WEIGHT", "1"))

    @tag("post", "current")
    @task(CURRENT_WEIGHT)
    def current_event(self) -> None:
        self.write(now_ms(), "POST current")

    @tag("post", "past")
    @task(PAST_WEIGHT)
    def late_event(self) -> None:
        self.write(past_ms(), "POST historic")


@events.init.add_listener
def drop_users_without_tasks(environment: Any, **_: Any) -> None:
    """``--tags get`` leaves Writer no task: run Reader alone instead of failing."""
    options = environment.parsed_options
    selected = set(getattr(options, "tags", None) or ())
    excluded = set(getattr(options, "exclude_tags", None) or ())

    def runs(user_class: type[ReactionsUser]) -> bool:
        tag_sets: list[set[str]] = [getattr(t, "locust_tag_set", set()) for t in user_class.tasks]
        return any((not selected or tags & selected) and not tags & excluded for tags in tag_sets)

    environment.user_classes[:] = [c for c in environment.user_classes if runs(c)] or environment.user_classes


@events.test_stop.add_listener
def save_ledger(**_: Any) -> None:
    if LEDGER_FILE:
        LEDGER.save(Path(LEDGER_FILE))
