"""``python -m sharding import FILE`` or ``--from-dsn DSN [--table user_reaction]``: arguments, summary, exit status.

Exit status: 0 every row is imported, already present or rejected as bad
input (see the rejects file); 1 an error, or batches the endpoint refused;
3 gave up on a batch (a shard out for longer than --give-up-after);
130 interrupted. After 3 or 130, rerun the same command: it is exact.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import uvloop

from sharding.importer.run import INTERRUPTED, Outcome, run_import
from sharding.importer.settings import ImportSettings
from sharding.importer.source import DEFAULT_TABLE, CsvSource, Source, TableSource
from sharding.importer.tally import Progress, RejectsFile, Tally
from sharding.local.settings import ClusterSettings

EXIT_REFUSED = 1
EXIT_GAVE_UP = 3
EXIT_INTERRUPTED = 130
# A cluster listening on every address is reached on loopback from its own host.
ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    defaults = ImportSettings(url="")
    cmd = commands.add_parser("import", help="import events from a CSV file or a user_reaction table")
    cmd.add_argument("file", nargs="?", help="a CSV file of timestamp,user,event records (optional header)")
    cmd.add_argument("--from-dsn", help="a PostgreSQL DSN holding a table in the user_reaction format")
    cmd.add_argument("--table", default=DEFAULT_TABLE, help=f"the table (default: {DEFAULT_TABLE})")
    cmd.add_argument("--url", help="the entry point (default: the local cluster of PORT and HOST)")
    cmd.add_argument("--rejects", type=Path, default=defaults.rejects,
                     help=f"where bad rows go, with the reason (default: {defaults.rejects})")
    cmd.add_argument("--batch-events", type=int, default=defaults.batch_events,
                     help=f"events per request (default: {defaults.batch_events}; keep it across reruns)")
    cmd.add_argument("--batch-bytes", type=int, default=defaults.batch_bytes,
                     help=f"bytes per request (default: {defaults.batch_bytes}; keep it across reruns)")
    cmd.add_argument("--concurrency", type=int, default=defaults.concurrency,
                     help=f"requests in flight (default: {defaults.concurrency})")
    cmd.add_argument("--give-up-after", type=float, default=defaults.give_up_s, metavar="SECONDS",
                     help=f"stop when a batch has no final answer this long (default: {defaults.give_up_s:.0f})")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar (it shows only on a terminal)")


def default_url() -> str:
    settings = ClusterSettings.from_env()
    host = ANY_ADDRESS.get(settings.host, settings.host)
    return f"http://[{host}]:{settings.port}" if ":" in host else f"http://{host}:{settings.port}"


def settings_of(args: argparse.Namespace) -> ImportSettings:
    settings = ImportSettings(url=args.url or default_url(), rejects=args.rejects, batch_events=args.batch_events,
                              batch_bytes=args.batch_bytes, concurrency=args.concurrency,
                              give_up_s=args.give_up_after)
    settings.validate()
    return settings


async def open_source(args: argparse.Namespace) -> Source:
    if (args.file is None) == (args.from_dsn is None):
        raise SystemExit("import: give either FILE or --from-dsn DSN")
    if args.file is not None:
        return CsvSource.open(Path(args.file))
    return await TableSource.open(args.from_dsn, args.table)


async def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    source = await open_source(args)
    tally = Tally(RejectsFile(settings.rejects))
    print(f"importing {source.description} into {settings.url}", file=sys.stderr)
    show = not args.no_progress and sys.stderr.isatty()
    progress = Progress(await source.count() if show else None, show)
    started = time.monotonic()
    try:
        outcome = await run_import(source, settings, tally, progress)
    finally:
        progress.close()
        tally.rejects.close()
    return report(outcome, settings, time.monotonic() - started)


def report(outcome: Outcome, settings: ImportSettings, elapsed: float) -> int:
    """The summary on stdout, then why it stopped early and what to do, on stderr; the exit status."""
    tally = outcome.tally
    rate = outcome.rows_read / elapsed if elapsed > 0 else 0.0
    print(f"imported: {tally.imported}")
    print(f"already present: {tally.already_present}")
    refused = f" (rows and reasons in {settings.rejects})" if tally.refused else ""
    print(f"refused: {tally.refused}{refused}")
    print(f"rows read: {outcome.rows_read} in {elapsed:.1f} s ({rate:,.0f} rows/s)")
    for result in tally.gave_up:
        print(f"GAVE UP on batch {result.batch.key} ({result.batch.first} to {result.batch.last}): "
              f"{result.gave_up}", file=sys.stderr)
    for batch in outcome.in_doubt:
        print(f"abandoned in flight, in doubt: batch {batch.key} ({batch.first} to {batch.last})", file=sys.stderr)
    reason = outcome.stop.reason
    if reason is None:
        return EXIT_REFUSED if tally.refused_by_server else 0
    print(f"import stopped early: {reason}", file=sys.stderr)
    print("rerun the same command to finish it: every batch is sent again with the same key and body, "
          "what is stored answers 'already present', nothing is counted twice", file=sys.stderr)
    if reason == INTERRUPTED:
        return EXIT_INTERRUPTED
    return EXIT_GAVE_UP if tally.gave_up else EXIT_REFUSED


def main(args: argparse.Namespace) -> None:
    # uvloop, as the services run: less of the machine's CPU per request, left to the cluster.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        status = runner.run(run(args))
    sys.exit(status)
