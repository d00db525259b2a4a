"""Rows to keyed batches: deterministic, checked as a single POST is, quoted as RFC 4180 wants."""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from common.events import BadInput, build_reaction
from common.hours import now_ms
from sharding.importer.batches import Batch, BatchMaker, Reject, check
from sharding.importer.source import SourceRow

TS = 1_764_000_000_000


def rows(count: int, start: int = 0) -> list[SourceRow]:
    return [SourceRow(i, f"id {i}", TS + i, f"user{i % 7}", "click" if i % 3 else "impression")
            for i in range(start, start + count)]


def cut(source: list[SourceRow], events: int = 10, size: int = 4096) -> list[Batch | Reject]:
    maker = BatchMaker("src", events, size, now_ms())
    half = len(source) // 2
    return [*maker.feed(source[:half]), *maker.feed(source[half:]), *maker.finish()]


def records(batch: Batch) -> list[list[str]]:
    return list(csv.reader(io.StringIO(batch.body.decode(), newline="")))


def test_blocks_follow_the_place_in_the_source_and_are_the_same_every_time() -> None:
    source = [r for r in rows(35) if r.block_id not in (12, 13)]  # ids with a gap, as a table has
    first, again = cut(source), cut(source)
    assert first == again
    assert [b.key for b in first if isinstance(b, Batch)] == ["import-src-0", "import-src-1", "import-src-2",
                                                               "import-src-3"]
    assert [b.events for b in first if isinstance(b, Batch)] == [10, 8, 10, 5]
    assert isinstance(first[1], Batch) and records(first[1])[0] == [str(TS + 10), "user3", "click"]


def test_a_bad_row_is_rejected_with_the_single_post_reason_and_the_rest_is_sent() -> None:
    bad = [SourceRow(3, "id 3", TS, "", "click"), SourceRow(4, "id 4", TS, "bob", "like"),
           SourceRow(5, "id 5", 123, "bob", "click"), SourceRow(6, "id 6", TS, "a\nb", "click"),
           SourceRow(7, "id 7", None, "bob", "click"), SourceRow(8, "record 9", None, None, None)]
    out = cut(rows(3) + bad + rows(2, start=9))
    rejects = [r for r in out if isinstance(r, Reject)]
    assert [r.label for r in rejects] == ["id 3", "id 4", "id 5", "id 6", "id 7", "record 9"]
    for reject in rejects[:4]:
        row = next(r for r in bad if r.label == reject.label)
        try:
            build_reaction(str(row.ts), str(row.user), str(row.event), None, now_ms())
        except BadInput as exc:
            assert reject.reason == (exc.text or "").strip()
        else:
            raise AssertionError(f"{row} passes a single POST")
    assert rejects[5].reason == "expected 3 fields: timestamp,user,event"
    assert sum(b.events for b in out if isinstance(b, Batch)) == 5


def test_usernames_with_commas_and_quotes_come_back_verbatim() -> None:
    names = ['a,b', 'say "hi"', '"', ',', ' padded ', 'é👨\u200d👩\u200d👧']
    source = [SourceRow(i, f"id {i}", TS, name, "click") for i, name in enumerate(names)]
    (batch,) = cut(source)
    assert isinstance(batch, Batch)
    assert [r[1] for r in records(batch)] == names


def test_a_block_over_the_byte_limit_is_cut_in_pieces_in_order() -> None:
    source = [SourceRow(i, f"id {i}", TS, "u" * 100, "impression") for i in range(100)]
    out = cut(source, events=50, size=4096)
    batches = [b for b in out if isinstance(b, Batch)]
    assert all(len(b.body) <= 4096 for b in batches)
    assert sum(b.events for b in batches) == 100
    assert [b.key for b in batches][:3] == ["import-src-0", "import-src-0.1", "import-src-1"]
    assert batches == [b for b in cut(source, events=50, size=4096) if isinstance(b, Batch)]


def test_other_sizes_reuse_the_first_key_with_another_body() -> None:
    """So the endpoint answers 422 to a rerun with other sizes instead of counting twice."""
    small, large = cut(rows(30), events=10), cut(rows(30), events=20)
    assert isinstance(small[0], Batch) and isinstance(large[0], Batch)
    assert small[0].key == large[0].key and small[0].body != large[0].body


NOW = now_ms()
# Valid values often, so that values at the edges meet otherwise valid rows.
TIMESTAMPS = st.one_of(
    st.sampled_from([TS, str(TS), NOW + 300_000, NOW + 300_001, str(NOW + 300_001), 946_684_800_000,
                     946_684_799_999, "946684799999"]),
    st.none(), st.integers(min_value=-2, max_value=10**20),
    st.sampled_from([TS, NOW, NOW + 300_000, NOW + 300_001, 946_684_800_000, 946_684_799_999, True]),
    st.sampled_from([str(TS), "0" + str(TS), f"{TS}x", "-5", "", "١٢٣", str(NOW + 300_001), "0" * 19 + "1",
                     str(TS).rjust(19, "0"), " " + str(TS), "+" + str(TS)]),
    st.text(alphabet="0123456789-+ x١", max_size=21))
USERS = st.one_of(st.sampled_from(["bob", "a,b", 'q"', "u" * 128, "u" * 129, "\x7f", "\x85", "é", "a\tb", "~"]),
                  st.none(), st.text(max_size=130))
EVENTS = st.one_of(st.sampled_from(["click", "impression"]), st.none(),
                   st.sampled_from(["Click", "", "like", "click "]), st.text(max_size=11))


EDGE_TIMESTAMPS = [TS, str(TS), NOW + 300_000, NOW + 300_001, str(NOW + 300_001), 946_684_800_000, 946_684_799_999,
                   "946684799999", "0" + str(TS), str(TS).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
                   "1" * 20, -1, True, None, ""]
EDGE_USERS = ["bob", "a,b", 'q"', "u" * 128, "u" * 129, "\x7f", "\x85", "é", "a b", "", None, "\ud800"]
EDGE_EVENTS = ["click", "impression", "Click", None]


def assert_as_checked(source: list[SourceRow]) -> None:
    """Every row its own batch: the body is the checked record, and a reject the checked reject."""
    maker = BatchMaker("src", 1, 4096, NOW)
    out = [*maker.feed(source), *maker.finish()]
    expected = [check(row, NOW) for row in source]
    assert [item.body if isinstance(item, Batch) else item for item in out] == expected
    assert [item.first for item in out if isinstance(item, Batch)] == \
        [row.label for row, checked in zip(source, expected, strict=True) if isinstance(checked, bytes)]


def test_the_fast_path_agrees_with_the_single_post_check_on_every_edge() -> None:
    fields = [(ts, user, event) for ts in EDGE_TIMESTAMPS for user in EDGE_USERS for event in EDGE_EVENTS]
    assert_as_checked([SourceRow(i, f"id {i}", *row) for i, row in enumerate(fields)])


@given(st.lists(st.tuples(TIMESTAMPS, USERS, EVENTS), max_size=40))
@settings(max_examples=400, deadline=None)
def test_the_fast_path_accepts_and_writes_exactly_what_the_single_post_check_does(
        fields: list[tuple[str | int | None, str | None, str | None]]) -> None:
    assert_as_checked([SourceRow(i, f"id {i}", ts, user, event) for i, (ts, user, event) in enumerate(fields)])
