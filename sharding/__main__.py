"""``python -m sharding COMMAND``: the local cluster and the shard file's tools.

    run                 start the whole stack in the foreground (PORT, SHARDS, AGGREGATORS, DATA_DIR)
    add-shard           add a shard to the running cluster of this PORT/DATA_DIR
    add-aggregator      add an aggregator replica to the running cluster
    retire-shard NAME   stop writes to a shard; its data stays readable
    status              the topology and the health of every part
    apply               bring the running cluster to the shard file (DATA_DIR/shards.json), safely
    entry               run the entry host (nginx) of a cluster on several hosts, in the foreground
    prune [--older-than-days N]    drop raw events older than N days on every shard (rollups stay)
    verify-shard NAME [--repair]   check a shard's rollups against its raw events (and rebuild what differs)
    import FILE | --from-dsn DSN [--table T] [--url URL]   import events through the batch endpoint
    render-nginx        print the nginx configuration for a shard file (docker compose)
    render-compose      print docker-compose.yml for a shard file of compose service names
    render-kubernetes   print Kubernetes manifests for a shard file of Service names
    render-prometheus   print a Prometheus configuration scraping every writer and aggregator of a shard file
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from common.rollups import NotCovered
from common.settings import SettingsError
from sharding import compose, kubernetes, nginx, prometheus
from sharding.apply import Refused
from sharding.config import ConfigError, load
from sharding.importer import cli as importer_cli
from sharding.importer.source import SourceError
from sharding.local.apply import apply_file
from sharding.local.cluster import ClusterError, LocalCluster
from sharding.local.entry_host import serve_entry
from sharding.local.lifecycle import prune, verify_shard
from sharding.local.operations import add_aggregator, add_shard, retire_shard, run, status
from sharding.local.processes import ProcessError
from sharding.local.settings import ClusterSettings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sharding", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="start the local cluster in the foreground")
    commands.add_parser("add-shard", help="add a shard to the running cluster")
    commands.add_parser("add-aggregator", help="add an aggregator replica to the running cluster")
    retire = commands.add_parser("retire-shard", help="stop writes to a shard, keep its data readable")
    retire.add_argument("name")
    commands.add_parser("status", help="show topology and health")
    apply_cmd = commands.add_parser("apply", help="bring the running cluster to the shard file, in the safe order")
    apply_cmd.add_argument("--shards-file", default=None, help="the edited shard file (default: DATA_DIR/shards.json)")
    commands.add_parser("entry", help="the entry host (nginx) of a cluster on several hosts, in the foreground")
    prune_cmd = commands.add_parser("prune", help="drop raw-log days past the retention on every shard now")
    prune_cmd.add_argument("--older-than-days", type=int, default=None,
                           help="keep this many whole days before today (default: REACTIONS_RAW_RETENTION_DAYS, 30)")
    verify = commands.add_parser("verify-shard", help="check a shard's rollups against its raw events")
    verify.add_argument("name")
    verify.add_argument("--repair", action="store_true", help="rebuild every mismatched hour from its raw events")
    importer_cli.add_parser(commands)
    render = commands.add_parser("render-nginx", help="print the nginx configuration of a shard file")
    render.add_argument("--shards-file", required=True)
    render.add_argument("--listen", default="8000", help="nginx listen address (default: 8000)")
    render.add_argument("--runtime-dir", default=nginx.NginxLayout.container().runtime_dir,
                        help="where nginx keeps its pid and temporary files")
    render.add_argument("--static-root", default=nginx.DASHBOARD_IN_CONTAINER,
                        help="the dashboard's files as nginx sees them (default: where the compose nginx mounts them)")
    compose_cmd = commands.add_parser("render-compose", help="print docker-compose.yml for a shard file")
    compose_cmd.add_argument("--shards-file", required=True)
    kube = commands.add_parser("render-kubernetes", help="print Kubernetes manifests for a shard file")
    kube.add_argument("--shards-file", required=True)
    scrape = commands.add_parser("render-prometheus", help="print prometheus.yml for a shard file")
    scrape.add_argument("--shards-file", required=True)
    scrape.add_argument("--rules-file", default=prometheus.ScrapeLayout.rules_file,
                        help="the alerting rules; relative to the configuration's folder (default: rules.yml)")
    scrape.add_argument("--interval", default=prometheus.DEFAULT_INTERVAL,
                        help=f"scrape and evaluation interval (default: {prometheus.DEFAULT_INTERVAL})")
    return parser.parse_args(argv)


def render_nginx(args: argparse.Namespace) -> None:
    layout = dataclasses.replace(nginx.NginxLayout.container(), listen=args.listen, runtime_dir=args.runtime_dir,
                                 static_root=args.static_root)
    sys.stdout.write(nginx.render(load(args.shards_file), layout, args.shards_file))


def render(args: argparse.Namespace) -> None:
    """The render-* commands: pure, no cluster needed."""
    if args.command == "render-nginx":
        render_nginx(args)
    elif args.command == "render-compose":
        sys.stdout.write(compose.render(load(args.shards_file)))
    elif args.command == "render-kubernetes":
        text = Path(args.shards_file).read_text()
        sys.stdout.write(kubernetes.render(load(args.shards_file), text, args.shards_file))
    else:
        layout = prometheus.ScrapeLayout(rules_file=args.rules_file, interval=args.interval)
        sys.stdout.write(prometheus.render(load(args.shards_file), layout, args.shards_file))


def operate(args: argparse.Namespace) -> None:
    """The commands that act on the cluster of PORT, HOST and DATA_DIR."""
    cluster = LocalCluster(ClusterSettings.from_env())
    commands: dict[str, Callable[[], object]] = {
        "run": lambda: run(cluster),
        "add-shard": lambda: add_shard(cluster),
        "add-aggregator": lambda: add_aggregator(cluster),
        "retire-shard": lambda: retire_shard(cluster, args.name),
        "apply": lambda: apply_file(cluster, Path(args.shards_file) if args.shards_file else cluster.shards_file),
        "entry": lambda: serve_entry(cluster),
        "status": lambda: print(status(cluster)),
        "prune": lambda: prune_cmd(cluster, args),
        "verify-shard": lambda: verify_cmd(cluster, args),
    }
    commands[args.command]()


def prune_cmd(cluster: LocalCluster, args: argparse.Namespace) -> None:
    days = cluster.settings.raw_retention_days if args.older_than_days is None else args.older_than_days
    if days < 1:
        raise SettingsError("--older-than-days must be at least 1 (today and yesterday are written to)")
    prune(cluster, days)


def verify_cmd(cluster: LocalCluster, args: argparse.Namespace) -> None:
    if not verify_shard(cluster, args.name, args.repair):
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if args.command.startswith("render-"):
            render(args)
        elif args.command == "import":
            importer_cli.main(args)
        else:
            operate(args)
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        sys.exit(1)
    except (ClusterError, ConfigError, SettingsError, ProcessError, PermissionError, NotCovered, SourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
