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
different body is told apart by, README, Batches).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass

from common.events import BAD_ENCODING, BAD_RECORD, BadInput, Reaction, bad_request, build_reaction

HEADER = ["timestamp", "user", "event"]
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Batch:
    """A batch's events in record order (record n is ``reactions[n - 1]``) and its digest."""

    reactions: list[Reaction]
    digest: bytes


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


def parse_batch(body: bytes, now: int, max_events: int) -> Batch:
    """Every record validated, or BadInput naming the first bad one; TooManyEvents past ``max_events``."""
    reader = csv.reader(io.StringIO(decode_body(body), newline=""), strict=True)
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
    return Batch(reactions, digest_of(reactions))


def parse_record(number: int, fields: list[str], now: int) -> Reaction:
    if len(fields) != 3:
        raise bad_request(BAD_RECORD, f"record {number}: expected 3 fields (timestamp,user,event), "
                                      f"found {len(fields)}")
    try:
        return build_reaction(fields[0], fields[1], fields[2], None, now)
    except BadInput as exc:
        raise bad_request(exc.code, f"record {number}: {exc.text.strip() if exc.text else exc.code}") from None


def digest_of(reactions: list[Reaction]) -> bytes:
    """SHA-256 of the events in order (no username holds a tab or a line end, so the encoding is unambiguous)."""
    h = hashlib.sha256()
    for r in reactions:
        h.update(f"{r.ts}\t{int(r.event)}\t{r.username}\n".encode())
    return h.digest()
