"""A batch part as one writer sends it to another (``POST /_internal/batch-part``).

Not public: nginx answers 404 for the path (its ``location /``); writers
listen on internal addresses. The body is CSV, one event a record:
``record,timestamp,user,event`` (the event as its schema number); the key
and the batch's digest travel as headers. The receiving writer checks every
field again (a username as in a single POST) and commits the part on its own
shard, under its own health and refusal rules (writer/batch_views.py).
"""

from __future__ import annotations

import csv
import io

from common.events import BAD_RECORD, MAX_FUTURE_SKEW_MS, Event, bad_request, parse_timestamp, parse_username
from common.hours import hour_of
from writer.batch_db import Part

PART_PATH = "/_internal/batch-part"
DIGEST_HEADER = "X-Reactions-Batch-Digest"


def encode_part(part: Part) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        zip(part.records, part.ts, part.users, part.events, strict=True))
    return out.getvalue().encode()


def decode_part(body: bytes, now: int) -> Part:
    """The part, every field checked; BadInput (400, nothing stored) otherwise."""
    part = Part([], [], [], [], [])
    try:
        for fields in csv.reader(io.StringIO(body.decode("utf-8"), newline=""), strict=True):
            add_record(part, fields, now)
    except (csv.Error, UnicodeDecodeError, ValueError) as exc:
        raise bad_request(BAD_RECORD, f"malformed batch part ({exc})") from None
    if not part.records:
        raise bad_request(BAD_RECORD, "empty batch part")
    return part


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
