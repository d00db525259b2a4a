"""Parsing of the three POST forms and of the GET timestamp.

Every function here is pure: it returns a typed value or raises
``BadInput`` (a 400) with a one-line reason for the client and a short code
for the metrics. Nothing is stored for a request that fails here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from aiohttp import web
from multidict import MultiMapping

from common.hours import hour_of

# Usernames are 1..128 characters: long enough for any real handle or e-mail,
# short enough that one row stays small and a user cannot bloat the sets.
MAX_USERNAME_CHARS = 128
# 19 digits hold any positive int64; more digits cannot be a real timestamp.
MAX_TIMESTAMP_DIGITS = 19
# A write may be at most this far ahead of the writer's clock: clients' clocks
# drift a little, but an event from next week is a bug, not a reaction.
MAX_FUTURE_SKEW_MS = 5 * 60 * 1000
# Writes before 2000-01-01 are refused: such a timestamp is almost surely in
# seconds, not milliseconds (1.7e9 ms is January 1970).
MIN_WRITE_TIMESTAMP_MS = 946_684_800_000
# Reads may ask for any hour up to year 9999 (later is certainly a bug).
MAX_READ_TIMESTAMP_MS = 253_402_300_799_999
# Client-chosen idempotency keys are opaque strings of bounded size.
MAX_IDEMPOTENCY_KEY_CHARS = 128
# What a username may not contain: control characters (general category Cc,
# a set Unicode promises never to change, so this needs no Unicode tables and
# accepts emoji newer than Python's) and surrogates, which no UTF-8 text holds
# (the decoder refuses them; a str made elsewhere might carry a lone one).
FORBIDDEN_IN_USERNAME = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# A username the fast readers of CSV take as it is (common/batches.py, writer/part_wire.py):
# one parse_username accepts that needs no quoting (no comma, no quote). Surrogates
# are left out of the class because decoded UTF-8 holds none.
PLAIN_USERNAME = rf"[^,\"\x00-\x1f\x7f-\x9f]{{1,{MAX_USERNAME_CHARS}}}"

# Why a request was refused, as the label of the writer's rejection counter:
# a fixed set, so that no client-chosen text becomes a label value.
MISSING_TIMESTAMP = "missing_timestamp"
BAD_TIMESTAMP = "bad_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
EARLY_TIMESTAMP = "early_timestamp"
MISSING_USER = "missing_user"
BAD_USER = "bad_user"
BAD_EVENT = "bad_event"
BAD_IDEMPOTENCY_KEY = "bad_idempotency_key"
REPEATED_PARAMETER = "repeated_parameter"
UNKNOWN_PARAMETER = "unknown_parameter"
BAD_ENCODING = "bad_encoding"
# A batch (POST /analytics/batch, common/batches.py): a record that is not
# three CSV fields, a missing key, a bad header.
BAD_RECORD = "bad_record"
REJECTION_CODES = (
    MISSING_TIMESTAMP, BAD_TIMESTAMP, FUTURE_TIMESTAMP, EARLY_TIMESTAMP, MISSING_USER, BAD_USER, BAD_EVENT,
    BAD_IDEMPOTENCY_KEY, REPEATED_PARAMETER, UNKNOWN_PARAMETER, BAD_ENCODING, BAD_RECORD,
)


class Event(enum.IntEnum):
    """Stored as a smallint; the values are part of the schema."""

    CLICK = 1
    IMPRESSION = 2


EVENT_NAMES: Mapping[str, Event] = {"click": Event.CLICK, "impression": Event.IMPRESSION}


@dataclass(frozen=True, slots=True)
class Reaction:
    """One validated write."""

    ts: int
    hour: int
    username: str
    event: Event
    idempotency_key: str | None = None


class BadInput(web.HTTPBadRequest):
    """A 400 whose body is the readable reason and whose ``code`` (one of REJECTION_CODES) labels the metric."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(text=reason + "\n")
        self.code = code


def bad_request(code: str, reason: str) -> BadInput:
    return BadInput(code, reason)


def parse_timestamp(raw: str) -> int:
    """A non-negative integer of milliseconds, else 400."""
    if not raw or len(raw) > MAX_TIMESTAMP_DIGITS or not raw.isascii() or not raw.isdigit():
        if raw.startswith("-") and raw[1:].isdigit():
            raise bad_request(BAD_TIMESTAMP, "timestamp must not be negative")
        raise bad_request(BAD_TIMESTAMP, "timestamp must be an integer number of milliseconds")
    return int(raw)


def parse_username(raw: str) -> str:
    """Usernames are data: any 1..128 characters but control characters and surrogates.

    Not ``str.isprintable()``: it refuses format characters (the zero-width
    joiner of family and flag emoji, the soft hyphen), every space but ASCII's
    (no-break space) and every character newer than Python's Unicode tables.
    """
    if not raw:
        raise bad_request(BAD_USER, "user must not be empty")
    if len(raw) > MAX_USERNAME_CHARS:
        raise bad_request(BAD_USER, f"user must be at most {MAX_USERNAME_CHARS} characters")
    if FORBIDDEN_IN_USERNAME.search(raw):
        raise bad_request(BAD_USER, "user must not contain control characters or surrogates")
    return raw


def parse_event(raw: str) -> Event:
    try:
        return EVENT_NAMES[raw]
    except KeyError:
        raise bad_request(BAD_EVENT, "event must be click or impression") from None


def parse_idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not raw or len(raw) > MAX_IDEMPOTENCY_KEY_CHARS or not raw.isprintable():
        raise bad_request(BAD_IDEMPOTENCY_KEY,
                          f"idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters")
    return raw


def build_reaction(ts_raw: str, user_raw: str, event_raw: str, key_raw: str | None, now: int) -> Reaction:
    """The one validation path that all three POST forms end in."""
    ts = parse_timestamp(ts_raw)
    if ts > now + MAX_FUTURE_SKEW_MS:
        raise bad_request(FUTURE_TIMESTAMP, "timestamp is in the future")
    reaction = Reaction(
        ts=ts,
        hour=hour_of(ts),
        username=parse_username(user_raw),
        event=parse_event(event_raw),
        idempotency_key=parse_idempotency_key(key_raw),
    )
    # Last, so that every other reason is reported first.
    if ts < MIN_WRITE_TIMESTAMP_MS:
        raise bad_request(EARLY_TIMESTAMP, "timestamp is before 2000: milliseconds since the epoch expected")
    return reaction


def require_utf8(raw_target: str) -> None:
    """400 unless the raw request target (path and query) is UTF-8 once percent-decoded.

    The URL parser replaces undecodable bytes with U+FFFD in the query and
    leaves them escaped in the path: without this check ``user=%FF`` and
    ``user=%FE`` would be stored as one user, and the path form would store
    a literal ``%FF``.
    """
    if "%" not in raw_target and raw_target.isascii():
        return  # the common case, checked without decoding
    try:
        unquote_to_bytes(raw_target).decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request(BAD_ENCODING, "the URL must be UTF-8 once percent-decoded") from None


def single(query: MultiMapping[str], name: str) -> str | None:
    """The one value of a query parameter, None if absent, 400 if repeated."""
    values = query.getall(name, ())
    if len(values) > 1:
        raise bad_request(REPEATED_PARAMETER, f"{name} must be given once")
    return values[0] if values else None


QUERY_WRITE_PARAMS = frozenset({"timestamp", "user", "event", "click", "impression", "id"})


def query_event(query: MultiMapping[str]) -> str:
    """The event of a query-form write: ``event=`` or exactly one bare flag."""
    flags = [name for name in EVENT_NAMES if name in query]
    explicit = single(query, "event")
    for name in flags:
        if single(query, name) != "":
            raise bad_request(BAD_EVENT, f"flag {name} takes no value")
    if explicit is not None and flags:
        raise bad_request(BAD_EVENT, "give the event either as event= or as a flag, not both")
    if explicit is None:
        if len(flags) != 1:
            raise bad_request(BAD_EVENT, "give exactly one event: click or impression")
        return flags[0]
    return explicit


def parse_query_write(query: MultiMapping[str], header_key: str | None, now: int) -> Reaction:
    """``POST /analytics?timestamp=..&user=..&event=..`` or ``&click`` / ``&impression``."""
    unknown = set(query) - QUERY_WRITE_PARAMS
    if unknown:
        raise bad_request(UNKNOWN_PARAMETER, f"unknown parameter: {sorted(unknown)[0]}")
    ts_raw = single(query, "timestamp")
    if ts_raw is None:
        raise bad_request(MISSING_TIMESTAMP, "timestamp is required")
    user_raw = single(query, "user")
    if user_raw is None:
        raise bad_request(MISSING_USER, "user is required")
    event_raw = query_event(query)
    return build_reaction(ts_raw, user_raw, event_raw, idempotency_key(query, header_key), now)


def parse_path_write(
    ts_raw: str, user_raw: str, event_raw: str, query: MultiMapping[str], header_key: str | None, now: int
) -> Reaction:
    """``POST /analytics/{ts}/{user}/{event}`` (an ``id`` query parameter is allowed)."""
    unknown = set(query) - {"id"}
    if unknown:
        raise bad_request(UNKNOWN_PARAMETER, f"unknown parameter: {sorted(unknown)[0]}")
    return build_reaction(ts_raw, user_raw, event_raw, idempotency_key(query, header_key), now)


def idempotency_key(query: MultiMapping[str], header_key: str | None) -> str | None:
    query_key = single(query, "id")
    if query_key is not None and header_key is not None and query_key != header_key:
        raise bad_request(BAD_IDEMPOTENCY_KEY, "Idempotency-Key header and id parameter differ")
    return query_key if query_key is not None else header_key


def parse_read_hour(query: MultiMapping[str]) -> int:
    """The hour bucket asked for by ``GET /analytics?timestamp=``."""
    ts_raw = single(query, "timestamp")
    if ts_raw is None:
        raise bad_request(MISSING_TIMESTAMP, "timestamp is required")
    ts = parse_timestamp(ts_raw)
    if ts > MAX_READ_TIMESTAMP_MS:
        raise bad_request(BAD_TIMESTAMP, "timestamp is out of range")
    return hour_of(ts)

