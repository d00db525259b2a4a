"""How an import runs: its target and its bounds. Built from the command's arguments (``cli.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.settings import SettingsError

# The batch endpoint's limits are 10,000 events and 1 MiB a request (docs/contract.md,
# Batches): the defaults stay well under both, and the maxima at them.
MAX_BATCH_EVENTS = 10_000
MAX_BATCH_BYTES = 1024 * 1024
# A valid record is at most a 19-digit timestamp, 128 four-byte characters doubled
# by quoting, and the event: a batch must hold at least one of the largest.
MIN_BATCH_BYTES = 4096
MAX_CONCURRENCY = 64


@dataclass(frozen=True)
class ImportSettings:
    url: str
    rejects: Path = Path("import-rejects.csv")
    # The endpoint's limit: per event, a request's and a part's fixed costs (nginx, the writers, a
    # transaction and its commit per shard) are a tenth of 1,000's (docs/performance.md, Import levers).
    # An import begun with another size is rerun with that size (--batch-events), or its block 0 is a 422.
    batch_events: int = 10_000
    batch_bytes: int = 512 * 1024
    # Batches in flight at once: enough to keep every shard busy, few enough not to starve single POSTs.
    concurrency: int = 4
    # One try: the entry point answers every request within 3 s; past this the try is in doubt.
    request_timeout_s: float = 10.0
    # Waits between tries of one batch: doubling from the first to the cap, never shorter than Retry-After
    # (itself capped, so that a wrong header cannot stall the import).
    backoff_first_s: float = 0.2
    backoff_max_s: float = 5.0
    # A batch still without a final answer this long after its first try: the import gives up, loudly
    # (it stops, says which rows are in doubt, exits 3), and a rerun finishes it exactly.
    give_up_s: float = 600.0
    # After Ctrl-C or SIGTERM the batches in flight get this long to finish; then they are abandoned
    # (in doubt: a rerun completes them).
    stop_grace_s: float = 30.0

    def validate(self) -> None:
        if not 1 <= self.batch_events <= MAX_BATCH_EVENTS:
            raise SettingsError(f"--batch-events must be 1..{MAX_BATCH_EVENTS}")
        if not MIN_BATCH_BYTES <= self.batch_bytes <= MAX_BATCH_BYTES:
            raise SettingsError(f"--batch-bytes must be {MIN_BATCH_BYTES}..{MAX_BATCH_BYTES}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise SettingsError(f"--concurrency must be 1..{MAX_CONCURRENCY}")
        if min(self.request_timeout_s, self.backoff_first_s, self.give_up_s, self.stop_grace_s) <= 0:
            raise SettingsError("timeouts and backoff must be positive")
        if self.backoff_max_s < self.backoff_first_s:
            raise SettingsError("--backoff-max must be at least the first backoff")
