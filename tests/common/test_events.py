"""The one parsing path of every write form, and the GET timestamp."""

from __future__ import annotations

import unicodedata

import pytest
from aiohttp import web
from multidict import MultiDict

from common.events import (
    BAD_USER,
    MAX_FUTURE_SKEW_MS,
    MAX_USERNAME_CHARS,
    MIN_WRITE_TIMESTAMP_MS,
    REJECTION_CODES,
    BadInput,
    Event,
    parse_path_write,
    parse_query_write,
    parse_read_hour,
    parse_username,
    require_utf8,
)
from common.hours import MS_PER_HOUR

NOT_AN_INTEGER = "timestamp must be an integer number of milliseconds"
ONE_EVENT = "give exactly one event: click or impression"
NO_CONTROL = "user must not contain control characters or surrogates"

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


# Usernames str.isprintable() refused although they are real text.
BEYOND_ISPRINTABLE = [
    "👨\u200d👩\u200d👧",  # a family: emoji joined by ZERO WIDTH JOINER (Cf)
    "🏳️\u200d🌈",  # a rainbow flag: variation selector and ZWJ
    "Jean\u00a0Dupont",  # NO-BREAK SPACE (Zs)
    "Donau\u00addampf",  # SOFT HYPHEN (Cf)
    "\u2003em\u2003space",  # EM SPACE (Zs)
    "\U0001fae8",  # SHAKING FACE, Unicode 15: newer than Python 3.11's tables (Cn there)
    "\U0001fae9x",  # Unicode 16
    "\u200e\u05e9\u05dc\u05d5\u05dd",  # LEFT-TO-RIGHT MARK and Hebrew
    "\ue000private",  # private use (Co)
    "\U000e0001tag",  # LANGUAGE TAG (Cf)
]


@pytest.mark.parametrize("name", ["O'Brien", 'a"b', "a&b", "100%", "Zoë", "🙂", "'; DROP TABLE reactions; --", "a b",
                                  "x" * MAX_USERNAME_CHARS, "🙂" * MAX_USERNAME_CHARS, *BEYOND_ISPRINTABLE])
def test_usernames_are_data(name: str) -> None:
    r = parse_query_write(query(("timestamp", str(NOW)), ("user", name), ("click", "")), None, NOW)
    assert r.username == name
    assert parse_path_write(str(NOW), name, "click", query(), None, NOW).username == name


CONTROL_CHARACTERS = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc"]


def test_the_control_characters_are_the_65_of_category_cc() -> None:
    assert len(CONTROL_CHARACTERS) == 65  # U+0000..U+001F, U+007F..U+009F: a set Unicode never changes


@pytest.mark.parametrize("bad", [*CONTROL_CHARACTERS, "\ud800", "\udfff", "\udbff"])
def test_control_characters_and_lone_surrogates_are_refused(bad: str) -> None:
    with pytest.raises(BadInput) as exc:
        parse_username(f"a{bad}b")
    assert (reason(exc), exc.value.code) == (NO_CONTROL, BAD_USER)


def test_only_cc_and_surrogates_are_refused() -> None:
    """Every other code point, assigned or not, is accepted (sampled: every 97th, plus each category's first)."""
    refused = [c for c in range(0, 0x110000, 97) if not accepts(chr(c))]
    assert all(unicodedata.category(chr(c)) in ("Cc", "Cs") for c in refused)
    assert accepts("\u0378")  # unassigned (Cn)
    assert accepts("\U0010ffff")  # a noncharacter


def accepts(name: str) -> bool:
    try:
        parse_username(name)
    except BadInput:
        return False
    return True


def test_username_length_counts_characters_not_bytes() -> None:
    assert parse_username("👨" * MAX_USERNAME_CHARS) == "👨" * MAX_USERNAME_CHARS
    with pytest.raises(BadInput):
        parse_username("👨" * (MAX_USERNAME_CHARS + 1))


@pytest.mark.parametrize(
    ("pairs", "code"),
    [
        ((("user", "a"), ("click", "")), "missing_timestamp"),
        ((("timestamp", "x"), ("user", "a"), ("click", "")), "bad_timestamp"),
        ((("timestamp", str(NOW * 2)), ("user", "a"), ("click", "")), "future_timestamp"),
        ((("timestamp", "1"), ("user", "a"), ("click", "")), "early_timestamp"),
        ((("timestamp", "1"), ("click", "")), "missing_user"),
        ((("timestamp", "1"), ("user", "a:b\n"), ("click", "")), "bad_user"),
        ((("timestamp", "1"), ("user", "a"), ("event", "like: it")), "bad_event"),
        ((("timestamp", "1"), ("user", "a"), ("user", "a"), ("click", "")), "repeated_parameter"),
        ((("timestamp", "1"), ("user", "a"), ("click", ""), ("x:y", "")), "unknown_parameter"),
        ((("timestamp", "1"), ("user", "a"), ("click", ""), ("id", "")), "bad_idempotency_key"),
    ],
)
def test_each_refusal_carries_a_code_from_the_fixed_set(pairs: tuple[tuple[str, str], ...], code: str) -> None:
    with pytest.raises(BadInput) as exc:
        parse_query_write(query(*pairs), None, NOW)
    assert exc.value.code == code
    assert code in REJECTION_CODES
    assert isinstance(exc.value, web.HTTPBadRequest) and exc.value.status == 400


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
        ((("timestamp", "1"), ("user", "a\nb"), ("click", "")), NO_CONTROL),
        ((("timestamp", "1"), ("user", "a\x00"), ("click", "")), NO_CONTROL),
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
