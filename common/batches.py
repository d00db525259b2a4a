"""Parsing of a batch of events: the body of ``POST /analytics/batch``.

The body is CSV (RFC 4180), one event per record: ``timestamp,user,event``,
each field exactly as in a single POST and validated by the same code
(``build_reaction`` in common/events.py), so a batch accepts exactly the
events that single POSTs accept. The first record may be the header
``timestamp,user,event``; CRLF or LF line ends; a leading UTF-8 BOM is
skipped. Records are numbered from 1 for the first event (a header is not
counted). Any bad record refuses the whole batch (400 naming the record and
the reason): nothing of it is stored.

The batch's digest identifies its events, not its bytes: the same events
quoted or ended differently are the same batch (what a key reused with a
different body is told apart by, docs/contract.md, Batches).

Two readers, one answer: the common body (unquoted, every record plainly
valid) is read by one regular expression over the whole text; any other
body, and every body with something to refuse, by the csv reader and
``build_reaction``, which word the refusal (tests/common/test_batches.py
holds them to the same answers).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass

from common.events import (
    BAD_ENCODING,
    BAD_RECORD,
    EVENT_NAMES,
    MAX_FUTURE_SKEW_MS,
    MAX_TIMESTAMP_DIGITS,
    MIN_WRITE_TIMESTAMP_MS,
    PLAIN_USERNAME,
    BadInput,
    Reaction,
    bad_request,
    build_reaction,
)
from common.hours import MS_PER_HOUR

HEADER = ["timestamp", "user", "event"]
BOM = b"\xef\xbb\xbf"
# A record of the common body (``fast_columns``): unquoted fields already
# valid in form (1..19 ASCII digits; a username of 1..128 characters, none of
# them a comma, a quote or one that common/events.py refuses, and a decoded
# body holds no surrogate; an event name), ended by LF, CRLF or the body's end.
FAST_RECORD = re.compile(
    rf"([0-9]{{1,{MAX_TIMESTAMP_DIGITS}}}),"
    rf"({PLAIN_USERNAME}),"
    rf"({'|'.join(map(re.escape, EVENT_NAMES))})(\r\n|\n|\Z)")
FAST_HEADER = re.compile("timestamp,user,event(?:\\r\\n|\\n)")
EVENT_NUMBERS = {name: int(event) for name, event in EVENT_NAMES.items()}


@dataclass(frozen=True)
class Batch:
    """A batch's events in record order, columnar (record n is index n - 1), and its digest."""

    ts: list[int]
    hours: list[int]
    users: list[str]
    events: list[int]  # as stored (common/events.py Event)
    digest: bytes

    def __len__(self) -> int:
        return len(self.ts)


def csv_field(value: str) -> str:
    """RFC 4180: quoted only when it must be (a valid username holds no line break)."""
    if "," in value or '"' in value:
        return '"' + value.replace('"', '""') + '"'
    return value


class TooManyEvents(Exception):
    """More records than the limit: a 413, nothing stored."""


def decode_body(body: bytes) -> str:
    """The body as text: a leading BOM skipped, UTF-8 required."""
    if body.startswith(BOM):
        body = body[len(BOM):]
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(BAD_ENCODING, f"the body must be UTF-8 (invalid byte at offset {exc.start})") from None


Columns = tuple[list[int], list[int], list[str], list[int]]


def parse_batch(body: bytes, now: int, max_events: int) -> Batch:
    """Every record validated, or BadInput naming the first bad one; TooManyEvents past ``max_events``."""
    text = decode_body(body)
    columns = fast_columns(text, now, max_events)
    if columns is None:  # anything unusual, or something to refuse: the full reader decides and words it
        reactions = checked_reactions(text, now, max_events)
        columns = ([r.ts for r in reactions], [r.hour for r in reactions], [r.username for r in reactions],
                   [int(r.event) for r in reactions])
    return Batch(*columns, digest_of(columns))


def fast_columns(text: str, now: int, max_events: int) -> Columns | None:
    """The columns of a body that is plainly valid, read in one pass; None when in any doubt.

    Never a refusal of its own: whatever it is unsure of (quotes, lone CRs,
    empty lines, a bad or out-of-range field, too many records) it leaves to
    ``checked_reactions``, which then accepts or refuses with its own words.
    """
    header = FAST_HEADER.match(text)
    start = header.end() if header else 0
    records = FAST_RECORD.findall(text, start)
    if not records or len(records) > max_events:
        return None
    # findall skips what does not match: the records explain the whole text only if their lengths add up to it.
    if start + sum(map(len, map("".join, records))) + 2 * len(records) != len(text):
        return None
    ts = [int(r[0]) for r in records]
    if max(ts) > now + MAX_FUTURE_SKEW_MS or min(ts) < MIN_WRITE_TIMESTAMP_MS:
        return None
    return ts, [t // MS_PER_HOUR for t in ts], [r[1] for r in records], [EVENT_NUMBERS[r[2]] for r in records]


def checked_reactions(text: str, now: int, max_events: int) -> list[Reaction]:
    """The full reader: any CSV, every record checked by ``build_reaction``, the first refusal worded."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    reactions: list[Reaction] = []
    number = 0
    try:
        for fields in reader:
            if reader.line_num == 1 and fields == HEADER:
                continue
            number += 1
            if number > max_events:
                raise TooManyEvents(f"a batch holds at most {max_events} events")
            reactions.append(parse_record(number, fields, now))
    except csv.Error as exc:
        raise bad_request(BAD_RECORD, f"record {number + 1}: not valid CSV ({exc})") from None
    if not reactions:
        raise bad_request(BAD_RECORD, "the batch holds no event")
    return reactions


def parse_record(number: int, fields: list[str], now: int) -> Reaction:
    if len(fields) != 3:
        raise bad_request(BAD_RECORD, f"record {number}: expected 3 fields (timestamp,user,event), "
                                      f"found {len(fields)}")
    try:
        return build_reaction(fields[0], fields[1], fields[2], None, now)
    except BadInput as exc:
        raise bad_request(exc.code, f"record {number}: {exc.text.strip() if exc.text else exc.code}") from None


def digest_of(columns: Columns) -> bytes:
    """SHA-256 of the events in order (no username holds a tab or a line end, so the encoding is unambiguous)."""
    ts, _, users, events = columns
    return hashlib.sha256("".join([f"{t}\t{e}\t{u}\n" for t, u, e in zip(ts, users, events, strict=True)])
                          .encode()).digest()
