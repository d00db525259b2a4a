"""docker-compose.yml rendered from a shard file whose addresses are compose service names.

Each shard gets a PostgreSQL service (the host of its DSN) with its own
volume; each writer address ``writer-a:8080`` becomes a service ``writer-a``;
each aggregator address likewise; nginx runs the configuration rendered from
the same shard file (``python -m sharding render-nginx``). Everything here is
pure data dumped by PyYAML: no Docker needed to render or to check it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from sharding.config import ConfigError, Shard, Topology
from sharding.nginx import DASHBOARD_IN_CONTAINER

POSTGRES_IMAGE = "postgres:15"
NGINX_IMAGE = "nginx:1.22"
# docker/ (shards.json, nginx.conf) is mounted as a directory, not file by
# file: a file rewritten by rename (as sharding.config.save does) would stay
# the old one inside a container that mounted the file itself.
CONFIG_DIR = "./docker"
CONFIG_DIR_IN_CONTAINER = "/etc/reactions"
SHARDS_FILE_IN_CONTAINER = f"{CONFIG_DIR_IN_CONTAINER}/shards.json"
NGINX_CONF_IN_CONTAINER = f"{CONFIG_DIR_IN_CONTAINER}/nginx.conf"
CONFIG_MOUNT = f"{CONFIG_DIR}:{CONFIG_DIR_IN_CONTAINER}:ro"
# The dashboard's static files, for nginx (sharding/nginx.py renders that path).
DASHBOARD_MOUNT = f"./dashboard:{DASHBOARD_IN_CONTAINER}:ro"
HEALTH = {"interval": "2s", "timeout": "2s", "retries": 30}
# Passwords come from compose's own secrets, files the user makes once (README,
# Docker compose) and never commits: the password alone for PostgreSQL's image,
# and the same password as a libpq passfile for the services.
SECRETS = {"postgres_password": {"file": "./docker/secrets/postgres_password"},
           "pgpass": {"file": "./docker/secrets/pgpass"}}
# The image runs as nobody; the passfile must be its own and mode 0600 (libpq's rule).
PGPASS_SECRET = {"source": "pgpass", "target": "pgpass", "uid": "65534", "gid": "65534", "mode": 0o600}


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def pg_host(shard: Shard) -> str:
    parts = urlsplit(shard.dsn)
    if not parts.hostname:
        raise ConfigError(f"shard {shard.name}: the DSN has no host (a compose service name)")
    return parts.hostname


def python_service(command: str, port: int, env: dict[str, str], depends: dict[str, Any]) -> dict[str, Any]:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/readyz')"
    return {
        "build": ".",
        "image": "reactions:latest",
        "command": ["python", "-m", command],
        "environment": {"REACTIONS_HOST": "0.0.0.0", "REACTIONS_PORT": str(port), "PGPASSFILE": "/run/secrets/pgpass",
                        **env},
        "secrets": [PGPASS_SECRET],
        "depends_on": depends,
        "healthcheck": {"test": ["CMD", "python", "-c", probe], **HEALTH},
        "restart": "unless-stopped",
    }


def services(topology: Topology) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for shard in topology.shards:
        found[pg_host(shard)] = {
            "image": POSTGRES_IMAGE,
            "environment": {"POSTGRES_USER": urlsplit(shard.dsn).username or "postgres",
                            "POSTGRES_DB": urlsplit(shard.dsn).path.lstrip("/") or "reactions",
                            # Only the compose network reaches it (no published port), with the password.
                            "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres_password",
                            "POSTGRES_INITDB_ARGS": "--auth-host=scram-sha-256 --auth-local=scram-sha-256"},
            "secrets": ["postgres_password"],
            "volumes": [f"{pg_host(shard)}-data:/var/lib/postgresql/data"],
            "healthcheck": {"test": ["CMD", "pg_isready", "-U", "postgres"], **HEALTH},
            "restart": "unless-stopped",
        }
    for shard in topology.active_shards:
        for address in shard.writers:
            host, port = host_port(address)
            # The shard file too: a writer places a batch's events as nginx would (README, Batches).
            service = python_service("writer.main", port, {"REACTIONS_DSN": shard.dsn,
                                                           "REACTIONS_SHARDS_FILE": SHARDS_FILE_IN_CONTAINER},
                                     {pg_host(shard): {"condition": "service_healthy"}})
            service["volumes"] = [CONFIG_MOUNT]
            found[host] = service
    every_pg = {pg_host(s): {"condition": "service_healthy"} for s in topology.shards}
    for address in topology.aggregators:
        host, port = host_port(address)
        service = python_service("aggregator.main", port, {"REACTIONS_SHARDS_FILE": SHARDS_FILE_IN_CONTAINER},
                                 every_pg)
        service["volumes"] = [CONFIG_MOUNT]
        found[host] = service
    backends = [host_port(a)[0] for s in topology.active_shards for a in s.writers]
    backends += [host_port(a)[0] for a in topology.aggregators]
    found["nginx"] = {
        "image": NGINX_IMAGE,
        "command": ["nginx", "-c", NGINX_CONF_IN_CONTAINER, "-g", "daemon off;"],
        "volumes": [CONFIG_MOUNT, DASHBOARD_MOUNT],
        "ports": ["8000:8000"],
        "depends_on": {name: {"condition": "service_healthy"} for name in backends},
        "restart": "unless-stopped",
    }
    return found


def render(topology: Topology) -> str:
    """The compose file as YAML text."""
    document = {"services": services(topology),
                "volumes": {f"{pg_host(s)}-data": {} for s in topology.shards},
                "secrets": SECRETS}
    header = ("# Rendered by `python -m sharding render-compose --shards-file docker/shards.json`;\n"
              "# edit docker/shards.json and render again (and docker/nginx.conf with render-nginx).\n")
    # Block style throughout, keys in the order built here (services read top-down:
    # PostgreSQL, writers, aggregators, nginx); safe_dump quotes any string YAML
    # would read as another type (REACTIONS_PORT: '8080').
    return header + yaml.safe_dump(document, default_flow_style=False, sort_keys=False, allow_unicode=True)
