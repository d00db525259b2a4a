"""A batch's part on this shard, committed in one set-based transaction.

One transaction per part (docs/contract.md, Batches):

1. the key's lock (an advisory transaction lock on the key), so that two
   tries of one key on this shard never commit the same record twice;
2. the key's earlier parts here (``batch_parts``): another body's digest is
   a 422; the records they committed are not committed again;
3. COPY of the missing events' raw rows (the raw log's partitions are made
   on demand, as for single POSTs);
4. one statement for the rollups, computed from the set: each hour's
   counters added in hour order, its version bumped once under the row lock
   it then holds until commit, its first-seen users inserted with that
   version (the per-hour version rules of docs/design.md, Design), a NOTIFY of
   every late hour, and the part's own ``batch_parts`` row;
5. the settle guard (``guard_commit``'s row, docs/design.md, Invariants 8):
   PostgreSQL rolls the part back rather than commit it past ``deadline``;
   in step 4's statement when there is one (one round trip fewer), on its
   own when every record was already there;
6. COMMIT.

Outcomes as for single POSTs (writer/batcher.py): ``NotStored`` when
PostgreSQL rolled the part back or it was never sent, ``OutcomeUnknown``
once COMMIT was sent and no answer came.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import Counter
from dataclasses import dataclass

import asyncpg

from common import partitions
from common.pg import WaitBounds, is_connection_error, release, terminate
from common.schema import COMMIT_GUARD, LATE_WRITES_CHANNEL
from writer.batcher import NotStored, OutcomeUnknown
from writer.db import MissingPartition, add_partitions, guard_commit, refusal

# The class of the two-int advisory locks a part takes on its key (another
# lock space than the migration's one-bigint lock).
KEY_LOCK_CLASS = 0x42415443  # "BATC"


class KeyReused(Exception):
    """The key's earlier parts here belong to another body: 422, nothing of this part stored."""


@dataclass(frozen=True)
class Part:
    """The events of a batch that go to one shard, columnar; ``records`` are their record numbers (from 1)."""

    records: list[int]
    ts: list[int]
    hours: list[int]
    users: list[str]
    events: list[int]

    def __len__(self) -> int:
        return len(self.records)

    def identity(self) -> str:
        """Stable across tries of one key, body and placement: a digest of the part's record numbers."""
        return hashlib.sha256(bitmap(self.records)).hexdigest()[:32]

    def select(self, indexes: list[int]) -> Part:
        return Part([self.records[i] for i in indexes], [self.ts[i] for i in indexes],
                    [self.hours[i] for i in indexes], [self.users[i] for i in indexes],
                    [self.events[i] for i in indexes])


@dataclass(frozen=True)
class PartCommitted:
    stored: int
    already_present: int


def bitmap(records: list[int]) -> bytes:
    """Bit n-1 set for record n, little-endian."""
    value = 0
    for n in records:
        value |= 1 << (n - 1)
    return value.to_bytes((max(records, default=0) + 7) // 8, "little")


LOCK_KEY = "SELECT pg_advisory_xact_lock($1, hashtext($2))"
EARLIER_PARTS = "SELECT body_digest, records FROM batch_parts WHERE idem_key = $1"
RAW_COLUMNS = ["ts", "hour", "username", "event"]

# Step 4 of the module docstring; $1..$3 the hours' counters in hour order,
# $4/$5 the (hour, user) pairs, $6 the current hour, $7.. the part's record.
COMMIT_ROLLUPS = f"""
WITH hc AS (
    INSERT INTO hour_counts AS h (hour, clicks, impressions, version)
    SELECT hour, clicks, impressions, 1
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS c(hour, clicks, impressions) ORDER BY hour
    ON CONFLICT (hour) DO UPDATE
        SET clicks = h.clicks + excluded.clicks,
            impressions = h.impressions + excluded.impressions,
            version = h.version + 1
    RETURNING hour, version
), hu AS (
    INSERT INTO hour_users (hour, username, version)
    SELECT u.hour, u.username, hc.version FROM unnest($4::bigint[], $5::text[]) AS u(hour, username)
    JOIN hc USING (hour)
    ON CONFLICT (hour, username) DO NOTHING
), bp AS (
    INSERT INTO batch_parts (idem_key, part, body_digest, records, events) VALUES ($7, $8, $9, $10, $11)
)
SELECT hour, pg_notify('{LATE_WRITES_CHANNEL}', hour::text) FROM hc WHERE hour <> $6
"""
# The same with step 5's row, $12 the deadline (a data-modifying WITH runs once, read or not).
COMMIT_ROLLUPS_GUARDED = COMMIT_ROLLUPS.replace(
    "WITH hc AS (", f"WITH guard AS ({COMMIT_GUARD.format(deadline='$12')}), hc AS (", 1)


def rollup_args(part: Part) -> tuple[list[int], list[int], list[int], list[int], list[str]]:
    clicks: Counter[int] = Counter()
    impressions: Counter[int] = Counter()
    for hour, event in zip(part.hours, part.events, strict=True):
        (clicks if event == 1 else impressions)[hour] += 1
    hours = sorted(clicks.keys() | impressions.keys())
    pairs = sorted(set(zip(part.hours, part.users, strict=True)))
    return hours, [clicks[h] for h in hours], [impressions[h] for h in hours], \
        [h for h, _ in pairs], [u for _, u in pairs]


async def missing_records(conn: asyncpg.Connection, key: str, digest: bytes, part: Part) -> list[int]:
    """Under the key's lock: the indexes (in ``part``) of the records no earlier try committed here."""
    await conn.execute(LOCK_KEY, KEY_LOCK_CLASS, key)
    done = 0
    for row in await conn.fetch(EARLIER_PARTS, key):
        if bytes(row["body_digest"]) != digest:
            raise KeyReused("the Idempotency-Key was used for another batch")
        done |= int.from_bytes(row["records"], "little")
    return [i for i, n in enumerate(part.records) if not (done >> (n - 1)) & 1]


async def write_part(conn: asyncpg.Connection, key: str, digest: bytes, part: Part, missing: Part,
                     current_hour: int, deadline: float) -> None:
    """Steps 3 to 5: the raw rows, then the rollups, the part's row and (if ``deadline`` is finite) the guard."""
    await conn.copy_records_to_table(
        "reactions", columns=RAW_COLUMNS,
        records=list(zip(missing.ts, missing.hours, missing.users, missing.events, strict=True)))
    args = (*rollup_args(missing), current_hour, key, part.identity(), digest, bitmap(missing.records), len(missing))
    if math.isfinite(deadline):
        await conn.execute(COMMIT_ROLLUPS_GUARDED, *args, deadline)
    else:
        await conn.execute(COMMIT_ROLLUPS, *args)


async def commit_once(conn: asyncpg.Connection, key: str, digest: bytes, part: Part, current_hour: int,
                      deadline: float) -> PartCommitted:
    """One transaction; raises ``CommitSent`` around a failure once COMMIT was sent."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        missing_at = await missing_records(conn, key, digest, part)
        if missing_at:
            await write_part(conn, key, digest, part, part.select(missing_at), current_hour, deadline)
        elif math.isfinite(deadline):  # nothing to write: the guard on its own
            await guard_commit(conn, deadline)
    except (asyncpg.PostgresError, KeyReused) as exc:
        if not is_connection_error(exc):
            await transaction.rollback()  # a clean refusal: the session stays usable
        raise
    try:
        await transaction.commit()
    except BaseException as exc:
        raise CommitSent(exc) from exc
    return PartCommitted(stored=len(missing_at), already_present=len(part) - len(missing_at))


class CommitSent(Exception):
    """COMMIT was sent and failed or got no answer: the part's outcome is unknown (unless PostgreSQL said no)."""


async def commit_part(pool: asyncpg.Pool, bounds: WaitBounds, key: str, digest: bytes, part: Part,
                      current_hour: int, deadline: float = math.inf) -> PartCommitted:
    """Commit ``part`` within ``bounds``: PartCommitted, or NotStored / OutcomeUnknown / KeyReused.

    The single place a part is committed (so the settle guard has one home).
    """
    try:
        conn = await pool.acquire(timeout=bounds.acquire_s)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise NotStored(f"database unreachable ({type(exc).__name__}); retry") from exc
    reusable = False
    try:
        try:
            result = await bounded_once(conn, bounds, key, digest, part, current_hour, deadline)
        except MissingPartition:  # rolled back: the connection makes the partitions, then the part again
            await add_partitions(conn, bounds, {partitions.day_of_hour(h) for h in set(part.hours)})
            result = await bounded_once(conn, bounds, key, digest, part, current_hour, deadline)
        reusable = True
        return result
    except KeyReused:
        reusable = True
        raise
    finally:
        if not reusable:
            terminate(conn)  # its session may be mid-statement or mid-transaction: never reused
        await release(pool, conn, bounds)


async def bounded_once(conn: asyncpg.Connection, bounds: WaitBounds, key: str, digest: bytes, part: Part,
                       current_hour: int, deadline: float) -> PartCommitted:
    """One try within ``bounds.statement_s``, its failure classified."""
    try:
        async with asyncio.timeout(bounds.statement_s):
            return await commit_once(conn, key, digest, part, current_hour, deadline)
    except CommitSent as sent:
        exc = sent.__cause__
        if isinstance(exc, asyncpg.PostgresError) and not is_connection_error(exc):
            raise refusal(exc) from exc
        raise OutcomeUnknown(f"no answer to the commit ({type(exc).__name__})") from exc
    except asyncpg.PostgresError as exc:
        if is_connection_error(exc):
            raise NotStored(f"connection lost before the commit ({exc.sqlstate})") from exc
        raise refusal(exc) from exc
    except TimeoutError as exc:
        raise NotStored(f"the part was not committed within {bounds.statement_s:g} s; retry") from exc
    except (OSError, asyncpg.InterfaceError) as exc:
        raise NotStored(f"connection lost before the commit ({type(exc).__name__})") from exc
