"""A batch body's two readers give one answer: the fast one never accepts or refuses what the csv reader would not.

The reference is the full reader alone (``checked_reactions``) with the
digest computed as it always was, one event at a time; every generated body,
valid or not, must get the same events, the same digest, or the same refusal
(code and words) from ``parse_batch``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random

import pytest

from common.batches import BOM, Batch, TooManyEvents, checked_reactions, decode_body, fast_columns, parse_batch
from common.events import MIN_WRITE_TIMESTAMP_MS, BadInput
from common.hours import MS_PER_HOUR

NOW = 1_764_000_000_000
GOOD_TS = [str(NOW - 5), str(NOW), "0" + str(NOW - 3_600_000), str(MIN_WRITE_TIMESTAMP_MS), str(NOW + 300_000)]
ODD_TS = ["", "-5", str(NOW + 300_001), str(MIN_WRITE_TIMESTAMP_MS - 1), "1" * 20, " " + str(NOW),
          "1_764_000_000_000", "\u0661\u0662", str(NOW) + ".0", "12", "0"]
GOOD_USERS = ["alice", "bob smith", "é", "Zoë", "用户", "👨\u200d👩\u200d👧", "a" * 128, "x~y.z-_", "a\u00a0b",
              "\u2028", "'quoted'", "a;b", "tab\u200bzero"]
ODD_USERS = ["", "a" * 129, "a\tb", "a\x7fb", "a\x85b", "a\x00b", "a,b", 'a"b', "a\rb", "a\nb", "\x9f"]
GOOD_EVENTS = ["click", "impression"]
ODD_EVENTS = ["Click", "", "click ", "clicks", "1", "impressions", "view"]
ENDS = ["\n", "\r\n"]
ODD_ENDS = ["\r", "\n\n", "\r\n\r\n", ",\n", ",,\n"]


def answer(body: bytes, max_events: int) -> tuple[object, ...]:
    try:
        batch = parse_batch(body, NOW, max_events)
    except BadInput as exc:
        return ("refused", exc.code, exc.text)
    except TooManyEvents as exc:
        return ("too many", str(exc))
    return ("batch", batch)


def reference(body: bytes, max_events: int) -> tuple[object, ...]:
    """The full reader, the digest one event at a time (as before the fast reader)."""
    try:
        reactions = checked_reactions(decode_body(body), NOW, max_events)
    except BadInput as exc:
        return ("refused", exc.code, exc.text)
    except TooManyEvents as exc:
        return ("too many", str(exc))
    h = hashlib.sha256()
    for r in reactions:
        h.update(f"{r.ts}\t{int(r.event)}\t{r.username}\n".encode())
    return ("batch", Batch([r.ts for r in reactions], [r.hour for r in reactions], [r.username for r in reactions],
                           [int(r.event) for r in reactions], h.digest()))


def field(rng: random.Random, good: list[str], odd: list[str], odd_share: float) -> str:
    value = rng.choice(odd if rng.random() < odd_share else good)
    if rng.random() < 0.03:  # quoted, as CSV allows (a quote inside doubled)
        value = '"' + value.replace('"', '""') + '"'
    return value


def body_of(rng: random.Random, odd_share: float) -> bytes:
    parts = []
    if rng.random() < 0.3:
        parts.append(rng.choice(["timestamp,user,event", '"timestamp",user,event', "Timestamp,user,event",
                                 "timestamp,user"]) + rng.choice([*ENDS, "\r"]))
    for _ in range(rng.randrange(0, 8)):
        record = ",".join([field(rng, GOOD_TS, ODD_TS, odd_share), field(rng, GOOD_USERS, ODD_USERS, odd_share),
                           field(rng, GOOD_EVENTS, ODD_EVENTS, odd_share)])
        parts.append(record + rng.choice(ODD_ENDS if rng.random() < odd_share else ENDS))
    text = "".join(parts)
    if text and rng.random() < 0.3:
        text = text.rstrip("\r\n")  # the last record without its line end
    raw = text.encode()
    if rng.random() < 0.1:
        raw = BOM + raw
    if rng.random() < 0.02:
        raw += b"\xff"
    return raw


@pytest.mark.parametrize("odd_share", [0.0, 0.02, 0.1, 0.5])
def test_fast_and_full_readers_answer_alike(odd_share: float) -> None:
    rng = random.Random(f"batches-{odd_share}")
    fast_taken = 0
    for _ in range(4000):
        body, max_events = body_of(rng, odd_share), rng.choice([3, 5, 1000])
        assert answer(body, max_events) == reference(body, max_events), body
        with contextlib.suppress(BadInput):  # not UTF-8
            fast_taken += fast_columns(decode_body(body), NOW, max_events) is not None
    if odd_share == 0.0:
        assert fast_taken > 1000  # the common body does take the fast reader


def test_a_plain_body_takes_the_fast_reader() -> None:
    text = "timestamp,user,event\r\n" + "".join(f"{NOW - i},u{i},{'click' if i % 2 else 'impression'}\n"
                                                for i in range(1000))
    columns = fast_columns(text, NOW, 1000)
    assert columns is not None
    ts, hours, users, events = columns
    assert ts[:2] == [NOW, NOW - 1] and hours[0] == NOW // MS_PER_HOUR and users[:2] == ["u0", "u1"]
    assert events[:2] == [2, 1]
    assert ("batch", parse_batch(text.encode(), NOW, 1000)) == reference(text.encode(), 1000)


@pytest.mark.parametrize("text", [
    f"{NOW},a,click\n\n{NOW},b,click\n",  # an empty line
    f"{NOW},a,click\r{NOW},b,click\n",  # a lone CR ends a record for csv
    f'{NOW},"a",click\n',  # quoted
    f"{NOW},a,click\n{NOW + 300_001},b,click\n",  # the future
    f"{NOW},a,click\n{MIN_WRITE_TIMESTAMP_MS - 1},b,click\n",  # before 2000
    f"{NOW},a,click\nx{NOW},b,click\n",  # text the records do not explain
    f"{NOW},a,click\n{NOW},b,click\n{NOW},c,click\n{NOW},d,click\n",  # past the limit of 3
    "timestamp,user,event\n",  # no event
    f"{NOW},a,click\ntimestamp,user,event\n",  # a header not first
])
def test_the_fast_reader_leaves_the_unusual_to_the_full_one(text: str) -> None:
    assert fast_columns(text, NOW, 3) is None
    assert answer(text.encode(), 3) == reference(text.encode(), 3)


def test_refusals_keep_their_record_and_reason() -> None:
    with pytest.raises(BadInput) as refused:
        parse_batch(f"{NOW},a,click\n{NOW + 300_001},b,click\n".encode(), NOW, 10)
    assert refused.value.text == "record 2: timestamp is in the future\n"
    with pytest.raises(TooManyEvents):
        parse_batch(f"{NOW},a,click\n{NOW},b,click\n".encode(), NOW, 1)
