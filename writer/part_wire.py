"""A batch part as one writer sends it to another (``POST /_internal/batch-part``).

Not public: nginx answers 404 for the path (its ``location /``); writers
listen on internal addresses. The body is CSV, one event a record:
``record,timestamp,user,event`` (the event as its schema number); the key
and the batch's digest travel as headers. The receiving writer checks every
field again (a username as in a single POST) and commits the part on its own
shard, under its own health and refusal rules (writer/batch_views.py).

Both ends have a fast path for the common part and keep the csv module for
the rest: ``encode_part`` writes the bytes csv.writer would, and
``decode_part`` reads a plainly valid body with one regular expression and
leaves any other body to the csv reader, so a part is accepted or refused
exactly as by the csv reader alone (tests/writer/test_part_wire.py).
"""

from __future__ import annotations

import csv
import io
import re

from common.batches import csv_field
from common.events import (
    BAD_RECORD,
    MAX_FUTURE_SKEW_MS,
    MAX_TIMESTAMP_DIGITS,
    PLAIN_USERNAME,
    Event,
    bad_request,
    parse_timestamp,
    parse_username,
)
from common.hours import MS_PER_HOUR, hour_of
from writer.batch_db import Part

PART_PATH = "/_internal/batch-part"
DIGEST_HEADER = "X-Reactions-Batch-Digest"
# A record number has at most this many digits on the fast path (a longer one
# goes to the csv reader, which refuses what int() cannot read).
MAX_RECORD_DIGITS = 9
# A record of a plainly valid part: a record number, a timestamp of at most 19
# digits, a username of allowed characters (common/events.py) without a
# comma or a quote, the event's number; ended by LF, CRLF or the body's end.
FAST_RECORD = re.compile(
    rf"([0-9]{{1,{MAX_RECORD_DIGITS}}}),([0-9]{{1,{MAX_TIMESTAMP_DIGITS}}}),"
    rf"({PLAIN_USERNAME}),"
    rf"([{''.join(str(int(e)) for e in Event)}])(\r\n|\n|\Z)")
def encode_part(part: Part) -> bytes:
    """The bytes csv.writer writes for the part's records (usernames quoted when they hold a comma or a quote)."""
    return "".join([f"{n},{t},{csv_field(u)},{e}\n" for n, t, u, e in
                    zip(part.records, part.ts, part.users, part.events, strict=True)]).encode()


def decode_part(body: bytes, now: int) -> Part:
    """The part, every field checked; BadInput (400, nothing stored) otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(BAD_RECORD, f"malformed batch part ({exc})") from None
    part = fast_part(text, now)
    if part is not None:
        return part
    part = Part([], [], [], [], [])
    try:
        for fields in csv.reader(io.StringIO(text, newline=""), strict=True):
            add_record(part, fields, now)
    except (csv.Error, ValueError) as exc:
        raise bad_request(BAD_RECORD, f"malformed batch part ({exc})") from None
    if not part.records:
        raise bad_request(BAD_RECORD, "empty batch part")
    return part


def fast_part(text: str, now: int) -> Part | None:
    """A plainly valid part read in one pass; None when in any doubt (the csv reader then decides)."""
    records = FAST_RECORD.findall(text)
    if not records or sum(map(len, map("".join, records))) + 3 * len(records) != len(text):
        return None  # findall skipped something the records do not explain
    numbers = [int(r[0]) for r in records]
    ts = [int(r[1]) for r in records]
    if min(numbers) < 1 or max(ts) > now + MAX_FUTURE_SKEW_MS:
        return None
    return Part(numbers, ts, [t // MS_PER_HOUR for t in ts], [r[2] for r in records], [int(r[3]) for r in records])


def add_record(part: Part, fields: list[str], now: int) -> None:
    record, ts_raw, user, event = fields  # ValueError if not four fields
    ts = parse_timestamp(ts_raw)
    if ts > now + MAX_FUTURE_SKEW_MS:
        raise ValueError("timestamp in the future")
    if int(record) < 1:
        raise ValueError("record numbers start at 1")
    part.records.append(int(record))
    part.ts.append(ts)
    part.hours.append(hour_of(ts))
    part.users.append(parse_username(user))
    part.events.append(int(Event(int(event))))
