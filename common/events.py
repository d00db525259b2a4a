"""Parsing of the three POST forms and of the GET timestamp.

Every function here is pure: it returns a typed value or raises
``HTTPBadRequest`` with a one-line reason. Nothing is stored for a request
that fails here.
"""

from __future__ import annotations

import enum
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


def bad_request(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=reason + "\n")


def parse_timestamp(raw: str) -> int:
    """A non-negative integer of milliseconds, else 400."""
    if not raw or len(raw) > MAX_TIMESTAMP_DIGITS or not raw.isascii() or not raw.isdigit():
        if raw.startswith("-") and raw[1:].isdigit():
            raise bad_request("timestamp must not be negative")
        raise bad_request("timestamp must be an integer number of milliseconds")
    return int(raw)


def parse_username(raw: str) -> str:
    if not raw:
        raise bad_request("user must not be empty")
    if len(raw) > MAX_USERNAME_CHARS:
        raise bad_request(f"user must be at most {MAX_USERNAME_CHARS} characters")
    if not raw.isprintable():
        raise bad_request("user must not contain control characters")
    return raw


def parse_event(raw: str) -> Event:
    try:
        return EVENT_NAMES[raw]
    except KeyError:
        raise bad_request("event must be click or impression") from None


def parse_idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not raw or len(raw) > MAX_IDEMPOTENCY_KEY_CHARS or not raw.isprintable():
        raise bad_request(f"idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters")
    return raw


def build_reaction(ts_raw: str, user_raw: str, event_raw: str, key_raw: str | None, now: int) -> Reaction:
    """The one validation path that all three POST forms end in."""
    ts = parse_timestamp(ts_raw)
    if ts > now + MAX_FUTURE_SKEW_MS:
        raise bad_request("timestamp is in the future")
    reaction = Reaction(
        ts=ts,
        hour=hour_of(ts),
        username=parse_username(user_raw),
        event=parse_event(event_raw),
        idempotency_key=parse_idempotency_key(key_raw),
    )
    # Last, so that every other reason is reported first.
    if ts < MIN_WRITE_TIMESTAMP_MS:
        raise bad_request("timestamp is before 2000: milliseconds since the epoch expected")
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
        raise bad_request("the URL must be UTF-8 once percent-decoded") from None


def single(query: MultiMapping[str], name: str) -> str | None:
    """The one value of a query parameter, None if absent, 400 if repeated."""
    values = query.getall(name, ())
    if len(values) > 1:
        raise bad_request(f"{name} must be given once")
    return values[0] if values else None


QUERY_WRITE_PARAMS = frozenset({"timestamp", "user", "event", "click", "impression", "id"})


def query_event(query: MultiMapping[str]) -> str:
    """The event of a query-form write: ``event=`` or exactly one bare flag."""
    flags = [name for name in EVENT_NAMES if name in query]
    explicit = single(query, "event")
    for name in flags:
        if single(query, name) != "":
            raise bad_request(f"flag {name} takes no value")
    if explicit is not None and flags:
        raise bad_request("give the event either as event= or as a flag, not both")
    if explicit is None:
        if len(flags) != 1:
            raise bad_request("give exactly one event: click or impression")
        return flags[0]
    return explicit


def parse_query_write(query: MultiMapping[str], header_key: str | None, now: int) -> Reaction:
    """``POST /analytics?timestamp=..&user=..&event=..`` or ``&click`` / ``&impression``."""
    unknown = set(query) - QUERY_WRITE_PARAMS
    if unknown:
        raise bad_request(f"unknown parameter: {sorted(unknown)[0]}")
    ts_raw = single(query, "timestamp")
    if ts_raw is None:
        raise bad_request("timestamp is required")
    user_raw = single(query, "user")
    if user_raw is None:
        raise bad_request("user is required")
    event_raw = query_event(query)
    return build_reaction(ts_raw, user_raw, event_raw, idempotency_key(query, header_key), now)


def parse_path_write(
    ts_raw: str, user_raw: str, event_raw: str, query: MultiMapping[str], header_key: str | None, now: int
) -> Reaction:
    """``POST /analytics/{ts}/{user}/{event}`` (an ``id`` query parameter is allowed)."""
    unknown = set(query) - {"id"}
    if unknown:
        raise bad_request(f"unknown parameter: {sorted(unknown)[0]}")
    return build_reaction(ts_raw, user_raw, event_raw, idempotency_key(query, header_key), now)


def idempotency_key(query: MultiMapping[str], header_key: str | None) -> str | None:
    query_key = single(query, "id")
    if query_key is not None and header_key is not None and query_key != header_key:
        raise bad_request("Idempotency-Key header and id parameter differ")
    return query_key if query_key is not None else header_key


def parse_read_hour(query: MultiMapping[str]) -> int:
    """The hour bucket asked for by ``GET /analytics?timestamp=``."""
    ts_raw = single(query, "timestamp")
    if ts_raw is None:
        raise bad_request("timestamp is required")
    ts = parse_timestamp(ts_raw)
    if ts > MAX_READ_TIMESTAMP_MS:
        raise bad_request("timestamp is out of range")
    return hour_of(ts)

