"""``python -m sharding COMMAND``: the local cluster and the shard file's tools.

    run                 start the whole stack in the foreground (PORT, SHARDS, AGGREGATORS, DATA_DIR)
    add-shard           add a shard to the running cluster of this PORT/DATA_DIR
    add-aggregator      add an aggregator replica to the running cluster
    retire-shard NAME   stop writes to a shard; its data stays readable
    status              the topology and the health of every part
    prune [--older-than-days N]    drop raw events older than N days on every shard (rollups stay)
    verify-shard NAME [--repair]   check a shard's rollups against its raw events (and rebuild what differs)
    render-nginx        print the nginx configuration for a shard file (docker compose)
    render-compose      print docker-compose.yml for a shard file of compose service names
    render-prometheus   print a Prometheus configuration scraping every writer and aggregator of a shard file
"""

from __future__ import annotations

import argparse
import sys

from common.rollups import NotCovered
from common.settings import SettingsError
from sharding import compose, nginx, prometheus
from sharding.config import ConfigError, load
from sharding.local.cluster import ClusterError, LocalCluster
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
    prune_cmd = commands.add_parser("prune", help="drop raw-log days past the retention on every shard now")
    prune_cmd.add_argument("--older-than-days", type=int, default=None,
                           help="keep this many whole days before today (default: REACTIONS_RAW_RETENTION_DAYS, 30)")
    verify = commands.add_parser("verify-shard", help="check a shard's rollups against its raw events")
    verify.add_argument("name")
    verify.add_argument("--repair", action="store_true", help="rebuild every mismatched hour from its raw events")
    render = commands.add_parser("render-nginx", help="print the nginx configuration of a shard file")
    render.add_argument("--shards-file", required=True)
    render.add_argument("--listen", default="8000", help="nginx listen address (default: 8000)")
    render.add_argument("--runtime-dir", default=nginx.NginxLayout.container().runtime_dir,
                        help="where nginx keeps its pid and temporary files")
    compose_cmd = commands.add_parser("render-compose", help="print docker-compose.yml for a shard file")
    compose_cmd.add_argument("--shards-file", required=True)
    scrape = commands.add_parser("render-prometheus", help="print prometheus.yml for a shard file")
    scrape.add_argument("--shards-file", required=True)
    scrape.add_argument("--rules-file", default=prometheus.ScrapeLayout.rules_file,
                        help="the alerting rules; relative to the configuration's folder (default: rules.yml)")
    scrape.add_argument("--interval", default=prometheus.DEFAULT_INTERVAL,
                        help=f"scrape and evaluation interval (default: {prometheus.DEFAULT_INTERVAL})")
    return parser.parse_args(argv)


def render_nginx(args: argparse.Namespace) -> None:
    layout = nginx.NginxLayout.container()
    layout = nginx.NginxLayout(listen=args.listen, runtime_dir=args.runtime_dir, access_log=layout.access_log,
                               error_log=layout.error_log, access_log_buffer=layout.access_log_buffer)
    sys.stdout.write(nginx.render(load(args.shards_file), layout, args.shards_file))


def cluster_command(cluster: LocalCluster, args: argparse.Namespace) -> None:
    """The commands that act on the cluster of this PORT and DATA_DIR."""
    if args.command == "run":
        run(cluster)
    elif args.command == "add-shard":
        add_shard(cluster)
    elif args.command == "add-aggregator":
        add_aggregator(cluster)
    elif args.command == "retire-shard":
        retire_shard(cluster, args.name)
    elif args.command == "prune":
        days = cluster.settings.raw_retention_days if args.older_than_days is None else args.older_than_days
        if days < 1:
            raise SettingsError("--older-than-days must be at least 1 (today and yesterday are written to)")
        prune(cluster, days)
    elif args.command == "verify-shard":
        if not verify_shard(cluster, args.name, args.repair):
            sys.exit(1)
    else:
        print(status(cluster))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if args.command == "render-nginx":
            render_nginx(args)
            return
        if args.command == "render-compose":
            sys.stdout.write(compose.render(load(args.shards_file)))
            return
        if args.command == "render-prometheus":
            layout = prometheus.ScrapeLayout(rules_file=args.rules_file, interval=args.interval)
            sys.stdout.write(prometheus.render(load(args.shards_file), layout, args.shards_file))
            return
        cluster_command(LocalCluster(ClusterSettings.from_env()), args)
    except (ClusterError, ConfigError, SettingsError, ProcessError, PermissionError, NotCovered) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
