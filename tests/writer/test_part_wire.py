"""A batch part on the wire: encoded as csv.writer would, decoded with exactly the csv reader's acceptance."""

from __future__ import annotations

import csv
import io
import random

import pytest

from common.events import BadInput
from writer.batch_db import Part
from writer.part_wire import add_record, decode_part, encode_part, fast_part

NOW = 1_764_000_000_000
USERS = ["alice", "a,b", 'say "hi"', '"', ",", "é", "用户", "👨\u200d👩\u200d👧", "a\u00a0b", "a" * 128, " lead", "'x'",
         "\u2028"]


def csv_reference(part: Part) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(zip(part.records, part.ts, part.users, part.events, strict=True))
    return out.getvalue().encode()


def decoded_by_csv(body: bytes) -> tuple[object, ...]:
    """The receiver as it was: the csv reader and add_record on every body."""
    part = Part([], [], [], [], [])
    try:
        for fields in csv.reader(io.StringIO(body.decode("utf-8"), newline=""), strict=True):
            add_record(part, fields, NOW)
    except (csv.Error, UnicodeDecodeError, ValueError) as exc:
        return ("refused", "bad_record", f"malformed batch part ({exc})\n")
    except BadInput as exc:
        return ("refused", exc.code, exc.text)
    if not part.records:
        return ("refused", "bad_record", "empty batch part\n")
    return ("part", part)


def decoded(body: bytes) -> tuple[object, ...]:
    try:
        return ("part", decode_part(body, NOW))
    except BadInput as exc:
        return ("refused", exc.code, exc.text)


def random_part(rng: random.Random) -> Part:
    n = rng.randrange(1, 20)
    ts = [NOW - rng.randrange(10**9) for _ in range(n)]
    return Part(sorted(rng.sample(range(1, 2000), n)), ts, [t // 3_600_000 for t in ts],
                [rng.choice(USERS) for _ in range(n)], [rng.choice([1, 2]) for _ in range(n)])


def test_encoding_is_byte_for_byte_what_csv_writer_writes_and_reads_back() -> None:
    rng = random.Random("encode")
    for _ in range(2000):
        part = random_part(rng)
        assert encode_part(part) == csv_reference(part)
        assert decode_part(encode_part(part), NOW) == part


FIELDS = {
    "record": ["1", "7", "0", "-1", "01", " 2", "2_0", "x", "", "\u0663"],
    "ts": [str(NOW), "0", str(NOW + 300_000), str(NOW + 300_001), "1" * 20, "-5", "", " 1", "12.5"],
    "user": ["bob", "é", "a" * 128, "a" * 129, "", "a\tb", "a\x85b", '"a,b"', '"q""q"', "a b", "\u2028"],
    "event": ["1", "2", "0", "3", "01", " 1", "click", ""],
}
ENDS = ["\n", "\n", "\r\n", "\r", "\n\n", ",\n"]


@pytest.mark.parametrize("odd_share", [0.0, 0.1, 0.5])
def test_decoding_accepts_and_refuses_as_the_csv_reader(odd_share: float) -> None:
    rng = random.Random(f"decode-{odd_share}")
    fast_taken = 0
    for _ in range(3000):
        lines = []
        for _ in range(rng.randrange(0, 6)):
            values = [rng.choice(v) if rng.random() < odd_share else v[0] if name != "user" else rng.choice(v[:3])
                      for name, v in FIELDS.items()]
            lines.append(",".join(values) + (rng.choice(ENDS) if rng.random() < odd_share else "\n"))
        text = "".join(lines)
        if text and rng.random() < 0.2:
            text = text.rstrip("\n")
        body = text.encode() + (b"\xff" if rng.random() < 0.01 else b"")
        assert decoded(body) == decoded_by_csv(body), body
        fast_taken += "\xff" not in body.decode("latin-1") and fast_part(text, NOW) is not None
    if odd_share == 0.0:
        assert fast_taken > 2000  # plain parts do take the fast reader


@pytest.mark.parametrize("text", [
    "0,1764000000000,a,1\n",  # record numbers start at 1
    f"1,{NOW + 300_001},a,1\n",  # the future
    "1,1764000000000,a,3\n",  # no such event
    '1,1764000000000,"a",1\n',  # quoted
    "1,1764000000000,a,1\r2,1764000000000,b,1\n",  # a lone CR
    "1,1764000000000,a,1\n\n",  # an empty record
    "",
])
def test_the_fast_reader_leaves_the_unusual_to_the_csv_reader(text: str) -> None:
    assert fast_part(text, NOW) is None
    assert decoded(text.encode()) == decoded_by_csv(text.encode())


def test_a_record_number_too_long_for_int_is_a_400_not_a_crash() -> None:
    """Python refuses to read an int of over 4,300 digits: the csv path turns that into a 400."""
    text = "9" * 5000 + ",1764000000000,a,1\n"
    assert fast_part(text, NOW) is None
    with pytest.raises(BadInput):
        decode_part(text.encode(), NOW)
