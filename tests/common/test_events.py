"""The one parsing path of every write form, and the GET timestamp."""

from __future__ import annotations

import pytest
from aiohttp import web
from multidict import MultiDict

from common.events import (
    MAX_FUTURE_SKEW_MS,
    MAX_USERNAME_CHARS,
    MIN_WRITE_TIMESTAMP_MS,
    Event,
    parse_path_write,
    parse_query_write,
    parse_read_hour,
    require_utf8,
)
from common.hours import MS_PER_HOUR

NOT_AN_INTEGER = "timestamp must be an integer number of milliseconds"
ONE_EVENT = "give exactly one event: click or impression"

NOW = 1_796_479_200_000


def query(*pairs: tuple[str, str]) -> MultiDict[str]:
    return MultiDict(pairs)


def reason(exc: pytest.ExceptionInfo[web.HTTPBadRequest]) -> str:
    return (exc.value.text or "").strip()


def test_event_parameter_form() -> None:
    r = parse_query_write(query(("timestamp", str(NOW)), ("user", "alice"), ("event", "click")), None, NOW)
    assert (r.ts, r.hour, r.username, r.event) == (NOW, NOW // MS_PER_HOUR, "alice", Event.CLICK)


def test_bare_flag_form() -> None:
    r = parse_query_write(query(("timestamp", str(NOW)), ("user", "bob"), ("impression", "")), None, NOW)
    assert (r.ts, r.username, r.event) == (NOW, "bob", Event.IMPRESSION)


def test_path_form() -> None:
    r = parse_path_write(str(NOW), "carol", "click", query(), None, NOW)
    assert (r.ts, r.username, r.event) == (NOW, "carol", Event.CLICK)


def test_usernames_are_data() -> None:
    for name in ["O'Brien", 'a"b', "a&b", "100%", "Zoë", "🙂", "'; DROP TABLE reactions; --", "a b"]:
        r = parse_query_write(query(("timestamp", str(NOW)), ("user", name), ("click", "")), None, NOW)
        assert r.username == name


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ((("user", "a"), ("click", "")), "timestamp is required"),
        ((("timestamp", "1"), ("timestamp", "2"), ("user", "a"), ("click", "")), "timestamp must be given once"),
        ((("timestamp", "1.5"), ("user", "a"), ("click", "")), NOT_AN_INTEGER),
        ((("timestamp", "abc"), ("user", "a"), ("click", "")), NOT_AN_INTEGER),
        ((("timestamp", ""), ("user", "a"), ("click", "")), NOT_AN_INTEGER),
        ((("timestamp", "١٢٣"), ("user", "a"), ("click", "")), NOT_AN_INTEGER),
        ((("timestamp", "-1"), ("user", "a"), ("click", "")), "timestamp must not be negative"),
        ((("timestamp", "9" * 20), ("user", "a"), ("click", "")), NOT_AN_INTEGER),
        (
            (("timestamp", str(NOW + MAX_FUTURE_SKEW_MS + 1)), ("user", "a"), ("click", "")),
            "timestamp is in the future",
        ),
        ((("timestamp", "1"), ("click", "")), "user is required"),
        ((("timestamp", "1"), ("user", ""), ("click", "")), "user must not be empty"),
        ((("timestamp", "1"), ("user", "a"), ("user", "b"), ("click", "")), "user must be given once"),
        (
            (("timestamp", "1"), ("user", "x" * (MAX_USERNAME_CHARS + 1)), ("click", "")),
            f"user must be at most {MAX_USERNAME_CHARS} characters",
        ),
        ((("timestamp", "1"), ("user", "a\nb"), ("click", "")), "user must not contain control characters"),
        ((("timestamp", "1"), ("user", "a\x00"), ("click", "")), "user must not contain control characters"),
        ((("timestamp", "1"), ("user", "a"), ("event", "like")), "event must be click or impression"),
        ((("timestamp", "1"), ("user", "a")), ONE_EVENT),
        ((("timestamp", "1"), ("user", "a"), ("click", ""), ("impression", "")), ONE_EVENT),
        (
            (("timestamp", "1"), ("user", "a"), ("event", "click"), ("click", "")),
            "give the event either as event= or as a flag, not both",
        ),
        ((("timestamp", "1"), ("user", "a"), ("click", "1")), "flag click takes no value"),
        ((("timestamp", "1"), ("user", "a"), ("click", ""), ("click", "")), "click must be given once"),
        ((("timestamp", "1"), ("user", "a"), ("click", ""), ("colour", "red")), "unknown parameter: colour"),
    ],
)
def test_query_write_rejections(pairs: tuple[tuple[str, str], ...], expected: str) -> None:
    with pytest.raises(web.HTTPBadRequest) as exc:
        parse_query_write(query(*pairs), None, NOW)
    assert reason(exc) == expected


@pytest.mark.parametrize(
    ("ts", "user", "event", "expected"),
    [
        ("x", "a", "click", NOT_AN_INTEGER),
        ("1", "a", "clicks", "event must be click or impression"),
        ("1", "x" * 129, "click", "user must be at most 128 characters"),
    ],
)
def test_path_write_rejections(ts: str, user: str, event: str, expected: str) -> None:
    with pytest.raises(web.HTTPBadRequest) as exc:
        parse_path_write(ts, user, event, query(), None, NOW)
    assert reason(exc) == expected


def test_idempotency_key_from_header_or_query() -> None:
    base = (("timestamp", str(NOW)), ("user", "a"), ("click", ""))
    assert parse_query_write(query(*base), "k1", NOW).idempotency_key == "k1"
    assert parse_query_write(query(*base, ("id", "k2")), None, NOW).idempotency_key == "k2"
    with pytest.raises(web.HTTPBadRequest):
        parse_query_write(query(*base, ("id", "k2")), "k3", NOW)


def test_read_hour() -> None:
    assert parse_read_hour(query(("timestamp", str(NOW)))) == NOW // MS_PER_HOUR
    for bad in [(), (("timestamp", "x"),), (("timestamp", "1"), ("timestamp", "1")), (("timestamp", "9" * 19),)]:
        with pytest.raises(web.HTTPBadRequest):
            parse_read_hour(query(*bad))


@pytest.mark.parametrize("target", ["/analytics?user=%C3%A9&click", "/analytics/1/%F0%9F%99%82/click", "/a?u=%ZZ&v=%"])
def test_a_target_that_is_utf8_once_decoded_passes(target: str) -> None:
    require_utf8(target)


@pytest.mark.parametrize("target", ["/analytics?user=%FF&click", "/analytics/1/%FE/click", "/a?u=%C0%AF",
                                    "/a?u=%ED%A0%80"])
def test_a_target_that_is_not_utf8_once_decoded_is_refused(target: str) -> None:
    with pytest.raises(web.HTTPBadRequest) as exc:
        require_utf8(target)
    assert reason(exc) == "the URL must be UTF-8 once percent-decoded"


def test_seconds_are_refused_as_timestamps() -> None:
    seconds = str(NOW // 1000)
    with pytest.raises(web.HTTPBadRequest) as exc:
        parse_path_write(seconds, "a", "click", query(), None, NOW)
    assert reason(exc) == "timestamp is before 2000: milliseconds since the epoch expected"
    assert parse_path_write(str(MIN_WRITE_TIMESTAMP_MS), "a", "click", query(), None, NOW).ts == MIN_WRITE_TIMESTAMP_MS
    # Other reasons come first: the floor is checked last.
    with pytest.raises(web.HTTPBadRequest) as exc:
        parse_path_write("1", "a", "like", query(), None, NOW)
    assert reason(exc) == "event must be click or impression"
