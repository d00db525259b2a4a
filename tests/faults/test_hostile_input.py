"""Hostile query strings and paths through nginx, for both endpoints (hypothesis).

Two properties:

- structured writes (every form, every kind of username, good and bad
  timestamps, events, repeated and unknown parameters) get exactly the answer
  an independent model of the contract predicts, and the shards then hold
  exactly the acknowledged events, byte for byte;
- arbitrary targets and methods get only answers of the contract, never a
  500 or 502, and never store anything but whole acknowledged events.
"""

from __future__ import annotations

import random
import string
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from common.events import MIN_WRITE_TIMESTAMP_MS
from common.hours import MS_PER_HOUR, now_ms
from sharding.local.cluster import LocalCluster
from tests.faults.raw_http import (
    ALLOWED_STATUSES,
    exchange,
    request,
    rollups_match_raw_events,
    stored_in_hour,
    total_events,
)

# Every part running (a fault test before may have stopped some).
pytestmark = pytest.mark.usefixtures("healthy")

EVENTS = {"click": 1, "impression": 2}
# SQL and URL metacharacters, quotes, escapes, unicode, emoji: usernames are data.
NASTY = ["'; DROP TABLE reactions; --", "Robert'); DELETE FROM hour_users;--", '"quoted"', "a\\b", "$1", "%s",
         "%%", "100%", "a&b=c", "x?y#z", "a/b", "a+b", " lead", "trail ", "ünïcödé", "名前", "🙂👍🏽", "' OR '1'='1",
         "NULL", "\\x00", "E'\\\\'", "$$; SELECT 1; $$", "--", "/*", "*/", ";", "`rm`", "<script>", "a" * 128,
         "👨\u200d👩\u200d👧", "🏳️\u200d🌈", "no\u00a0break", "soft\u00adhyphen", "\U0001fae8"]


@dataclass
class Sent:
    expected_status: int
    stored: tuple[int, str, int, str | None] | None  # the row a 204 must leave


class Acknowledged:
    """What the module's writes were answered, for comparing with the shards at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, int, str | None]] = []
        self.keys = 0


@pytest.fixture(scope="module")
def acknowledged(faults_cluster: LocalCluster, hour: int) -> Iterator[Acknowledged]:
    record = Acknowledged()
    yield record
    assert stored_in_hour(faults_cluster, hour) == sorted(record.rows, key=repr), "the shards hold exactly the 204s"
    assert rollups_match_raw_events(faults_cluster) == []


# -- structured writes, with a model of the contract ---------------------------

# What a username may hold: anything but control characters (Cc) and surrogates
# (docs/contract.md), including format characters such as the ZWJ,
# every kind of space, private use and code points unassigned in Python's tables.
USERNAME_CHARACTERS = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
usernames = st.one_of(
    st.sampled_from(NASTY),
    st.text(alphabet=USERNAME_CHARACTERS, min_size=1, max_size=128),
    st.text(min_size=0, max_size=140),
)
# "OWN": a valid timestamp in the module's hour (most writes should be valid, so most are stored).
timestamps = st.sampled_from(["OWN"] * 20 + ["", "-1", "1.5", "1e3", "0x10", " 1", "１２", "99999999999999999999",
                                              "FUTURE", "abc", "1700000000"])
event_names = st.sampled_from(["click", "impression"] * 3 + ["Click", "like", ""])


@dataclass(frozen=True)
class Write:
    form: str  # "path", "event", "flag"
    ts: str
    user: str
    event: str
    extras: tuple[str, ...]  # "dup_user", "unknown", "both", "flag_value", "id"
    order: int


writes = st.builds(Write, st.sampled_from(["path", "event", "flag"]), timestamps, usernames, event_names,
                   st.one_of(st.just(()), st.just(("id",)), st.just(()),
                             st.lists(st.sampled_from(["dup_user", "unknown", "both", "flag_value", "id"]), max_size=2,
                                      unique=True).map(tuple)),
                   st.integers(0, 5))


def model(write: Write, ts: str, key: str | None) -> int:
    """The status the contract gives this write (docs/contract.md)."""
    if write.form == "path" and "\x00" in ts + write.user + write.event:
        return 400  # nginx itself refuses a %00 in the path (ngx_http_parse_complex_uri), before any location
    if write.form == "path" and (not ts or not write.user or not write.event):
        return 404  # an empty path segment is not the write path
    query_bad = write.form != "path" and bool(set(write.extras) & {"dup_user", "unknown", "both"})
    query_bad |= write.form == "flag" and "flag_value" in write.extras
    path_bad = write.form == "path" and "unknown" in write.extras
    ts_ok = ts.isascii() and ts.isdigit() and len(ts) <= 19 and MIN_WRITE_TIMESTAMP_MS <= int(ts) <= now_ms()
    user_ok = 1 <= len(write.user) <= 128 and all(unicodedata.category(c) != "Cc" for c in write.user)
    ok = ts_ok and user_ok and write.event in EVENTS and not query_bad and not path_bad
    return 204 if ok else 400


def target(write: Write, ts: str, key: str | None) -> str:
    user = quote(write.user, safe="")
    if write.form == "path":
        query = "&".join(p for p in ["unknown=1" if "unknown" in write.extras else "", f"id={key}" if key else ""] if p)
        return f"/analytics/{quote(ts, safe='')}/{user}/{quote(write.event, safe='')}" + (f"?{query}" if query else "")
    params = [f"timestamp={quote(ts, safe='')}", f"user={user}"]
    params.append(f"event={quote(write.event, safe='')}" if write.form == "event" else quote(write.event, safe=""))
    if write.form == "flag" and "flag_value" in write.extras:
        params[-1] += "=1"
    params += [f"user={user}"] if "dup_user" in write.extras else []
    params += ["unknown=1"] if "unknown" in write.extras else []
    params += [f"event={'impression' if write.event == 'click' else 'click'}"] if "both" in write.extras else []
    params += [f"id={key}"] if key else []
    rotated = params[write.order % len(params):] + params[: write.order % len(params)]
    return "/analytics?" + "&".join(rotated)


@given(write=writes)
def test_structured_writes_get_the_contracts_answer_and_store_exactly_that(
        faults_cluster: LocalCluster, hour: int, acknowledged: Acknowledged, write: Write) -> None:
    ts = {"OWN": str(hour * MS_PER_HOUR + random.randrange(MS_PER_HOUR)),
          "FUTURE": str(now_ms() + 86_400_000)}.get(write.ts, write.ts)
    acknowledged.keys += 1
    key = f"hostile-{hour}-{acknowledged.keys}" if "id" in write.extras else None
    answer = exchange(faults_cluster.settings.port, request("POST", target(write, ts, key)))
    expected = model(write, ts, key)
    event(f"{write.form} form: {answer.status}")
    assert answer.status == expected, f"{target(write, ts, key)}: {answer.status} {answer.body!r}"
    if answer.status == 204:
        acknowledged.rows.append((int(ts), write.user, EVENTS[write.event], key))


@pytest.mark.parametrize("form", ["path", "event", "flag"])
def test_sql_metacharacters_in_usernames_are_stored_verbatim(faults_cluster: LocalCluster, hour: int,
                                                             acknowledged: Acknowledged, form: str) -> None:
    for i, user in enumerate(NASTY):
        ts = str(hour * MS_PER_HOUR + i)
        write = Write(form, ts, user, "click", (), 0)
        answer = exchange(faults_cluster.settings.port, request("POST", target(write, ts, None)))
        assert answer.status == 204, f"{user!r}: {answer.status} {answer.body!r}"
        acknowledged.rows.append((int(ts), user, 1, None))
    stored = {row[1] for row in stored_in_hour(faults_cluster, hour)}
    assert set(NASTY) <= stored


raw_usernames = st.one_of(st.binary(min_size=1, max_size=40), st.text(min_size=1, max_size=30).map(str.encode))


@given(raw=raw_usernames, form=st.sampled_from(["path", "event", "flag"]))
def test_usernames_of_any_bytes_are_stored_as_decoded_or_refused(faults_cluster: LocalCluster, hour: int,
                                                                 acknowledged: Acknowledged, raw: bytes,
                                                                 form: str) -> None:
    """Percent-encoded bytes: valid UTF-8 is stored decoded, anything else is a 400 (never U+FFFD, never a 500)."""
    try:
        user = raw.decode("utf-8")
    except UnicodeDecodeError:
        user = None
    ts = str(hour * MS_PER_HOUR + random.randrange(MS_PER_HOUR))
    path = target(Write(form, ts, "USERSLOT", "click", (), 0), ts, None).replace("USERSLOT", quote(raw, safe=""))
    answer = exchange(faults_cluster.settings.port, request("POST", path))
    expected = 400 if user is None else model(Write(form, ts, user, "click", (), 0), ts, None)
    event(f"{form}, {'utf-8' if user is not None else 'not utf-8'}: {answer.status}")
    assert answer.status == expected, f"{path}: {answer.status} {answer.body!r}"
    if answer.status == 204:
        assert user is not None
        acknowledged.rows.append((int(ts), user, 1, None))


@pytest.mark.parametrize("user", ["{", "}", "{user}", "a{1,2}b"])
def test_braces_in_usernames_work_in_every_form(faults_cluster: LocalCluster, hour: int, acknowledged: Acknowledged,
                                                user: str) -> None:
    for i, form in enumerate(["path", "event", "flag"]):
        ts = str(hour * MS_PER_HOUR + 10_000 + i)
        answer = exchange(faults_cluster.settings.port, request("POST", target(Write(form, ts, user, "click", (), 0),
                                                                               ts, None)))
        assert answer.status == 204, f"{form}: {answer.status} {answer.body!r}"
        acknowledged.rows.append((int(ts), user, 1, None))


# -- arbitrary targets -------------------------------------------------------------

URL_CHARS = string.ascii_letters + string.digits + "-._~%/?#[]@!$&'()*+,;=:" + '"<>\\^`{|} '
junk = st.text(alphabet=URL_CHARS, max_size=60)
methods = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "FOO"])
paths = st.one_of(
    st.just("/analytics"),
    st.builds(lambda a, b, c: f"/analytics/{a}/{b}/{c}", junk, junk, junk),
    st.builds(lambda b, c: f"/analytics/OWN/{b}/{c}", junk, st.sampled_from(["click", "impression", "x"])),
    st.builds(lambda rest: "/analytics" + rest, junk),
    st.builds(lambda rest: "/" + rest, junk),
)
params = st.lists(st.tuples(st.sampled_from(["timestamp", "user", "event", "click", "impression", "x", ""]),
                            st.one_of(junk, st.just("OWN"))), max_size=5)


@given(method=methods, path=paths, query=params)
def test_arbitrary_targets_get_only_contract_answers_and_store_whole_events_only(
        faults_cluster: LocalCluster, hour: int, method: str, path: str, query: list[tuple[str, str]]) -> None:
    before = total_events(faults_cluster)
    own_ts = str((hour + 1) * MS_PER_HOUR + 1)  # not the hour whose rows the module compares
    text = "&".join(f"{k}={own_ts if v == 'OWN' else v}" if v else k for k, v in query)
    raw_target = (path.replace("OWN", own_ts) + ("?" + text if text else "")).replace(" ", "%20").encode()
    answer = exchange(faults_cluster.settings.port, request(method, raw_target))
    event(f"{method} {path.split('/')[1][:9]!r}: {answer.status}")
    reads = {200} if method in ("GET", "HEAD") else set()  # a read of an hour is a 200
    assert answer.status in ALLOWED_STATUSES | reads, answer.raw[:300]
    after = total_events(faults_cluster)
    stored = after[0] - before[0]
    assert stored == after[1] - before[1], "raw events and counters grow together"
    assert stored == (1 if answer.status == 204 else 0), f"{answer.status}: {stored} events stored"
