"""What an import did: the counts of its summary, the rejects file, and the progress bar."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tqdm import tqdm

from common.settings import SettingsError
from sharding.importer.batches import Batch, Reject
from sharding.importer.client import BatchResult

REJECTS_HEADER = ("source_row", "timestamp", "user", "event", "reason")


class RejectsFile:
    """CSV of the rows not imported and why; made on the first reject (an older one is removed at the start)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[str] | None = None
        try:
            self.path.unlink(missing_ok=True)
            self.path.touch()  # fails now, not midway, where it cannot be written
            self.path.unlink()
        except OSError as exc:
            raise SettingsError(f"--rejects {path}: {exc.strerror}") from None

    def write(self, reject: Reject) -> None:
        if self.handle is None:
            self.handle = self.path.open("w", encoding="utf-8", errors="surrogateescape", newline="")
            csv.writer(self.handle).writerow(REJECTS_HEADER)
        csv.writer(self.handle).writerow((reject.label, reject.ts, reject.user, reject.event, reject.reason))

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


@dataclass
class Tally:
    """Counts by row: imported now, already present (an earlier run or try stored them), refused."""

    rejects: RejectsFile
    imported: int = 0
    already_present: int = 0
    refused: int = 0
    refused_by_server: int = 0
    gave_up: list[BatchResult] = field(default_factory=list)

    def reject(self, reject: Reject) -> None:
        self.refused += 1
        self.rejects.write(reject)

    def record(self, result: BatchResult) -> None:
        if result.gave_up is not None:
            self.gave_up.append(result)
        elif result.refused is not None:
            self.refuse_batch(result.batch, result.refused)
        else:
            self.imported += result.stored
            self.already_present += result.already_present

    def refuse_batch(self, batch: Batch, reason: str) -> None:
        """A batch the endpoint refused: each of its rows goes to the rejects file with the answer."""
        self.refused_by_server += batch.events
        for row in batch.rows:
            self.reject(Reject(row.label, str(row.ts), str(row.user), str(row.event),
                               f"batch {batch.key} refused: {reason}"))


class Progress:
    """tqdm's bar of rows done, with rows/s and the ETA, on a terminal; notes go above it (stderr)."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.bar = tqdm(total=total, unit=" rows", unit_scale=True, disable=not enabled, file=sys.stderr,
                        mininterval=0.5, smoothing=0.1, dynamic_ncols=True)

    def advance(self, rows: int) -> None:
        self.bar.update(rows)

    def note(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)

    def retrying(self, batch: Batch, tries: int, why: str, wait: float) -> None:
        self.note(f"batch {batch.key} ({batch.first} to {batch.last}): try {tries}: {why}; "
                  f"try {tries + 1} in {wait:.1f} s")

    def close(self) -> None:
        self.bar.close()
