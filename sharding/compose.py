"""docker-compose.yml rendered from a shard file whose addresses are compose service names.

Each shard gets a PostgreSQL service (the host of its DSN) with its own
volume; each writer address ``writer-a:8080`` becomes a service ``writer-a``;
each aggregator address likewise; nginx runs the configuration rendered from
the same shard file (``python -m sharding render-nginx``). The images are the
project's own (sharding/images.py). Everything here is pure data dumped by
PyYAML: no Docker needed to render or to check it.

Addresses are fixed. Debian's nginx resolves its upstream names once, at
start, and a restarted container would get a new address: each service gets a
fixed address on the project's own network, and every container finds every
service in its /etc/hosts (``extra_hosts``), whether that service runs yet or
not. So nginx starts in any order, and a restarted writer gets its users back.
The network is ``${REACTIONS_NET}.0/24`` (the first three numbers; default
below), for a machine where that one is taken.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from sharding import images
from sharding.config import ConfigError, Shard, Topology

# docker/ (shards.json, nginx.conf) is mounted as a directory, not file by
# file: a file rewritten by rename (as sharding.config.save does) would stay
# the old one inside a container that mounted the file itself.
CONFIG_DIR = "./docker"
CONFIG_DIR_IN_CONTAINER = "/etc/reactions"
SHARDS_FILE_IN_CONTAINER = f"{CONFIG_DIR_IN_CONTAINER}/shards.json"
NGINX_CONF_IN_CONTAINER = f"{CONFIG_DIR_IN_CONTAINER}/nginx.conf"
CONFIG_MOUNT = f"{CONFIG_DIR}:{CONFIG_DIR_IN_CONTAINER}:ro"
HEALTH = {"interval": "2s", "timeout": "2s", "retries": 30}
# Passwords come from compose's own secrets, files that `make docker-up` makes
# once (mode 0600) and git never sees: the password alone for PostgreSQL, and
# the same password as a libpq passfile for the services. Compose mounts them
# as they are (uid, gid and mode apply under swarm only): the images'
# entrypoints, as root, hand a copy to their unprivileged user.
SECRETS = {"postgres_password": {"file": "./docker/secrets/postgres_password"},
           "pgpass": {"file": "./docker/secrets/pgpass"}}
PASSWORD_IN_CONTAINER = "/run/secrets/postgres_password"
# The compose project (COMPOSE_PROJECT_NAME or -p override it), whatever the clone's folder is called.
PROJECT = "reactions"
NETWORK = "reactions"
NET_VARIABLE = "REACTIONS_NET"
DEFAULT_NET = "10.213.47"
NET = f"${{{NET_VARIABLE}:-{DEFAULT_NET}}}"
# The last number of each service's address: databases, writers, aggregators, nginx.
FIRST_PG, FIRST_WRITER, FIRST_AGGREGATOR, NGINX_HOST = 10, 100, 200, 250
# nginx's published port: PORT (default 8000) on REACTIONS_BIND (default loopback only).
PUBLISHED = "${REACTIONS_BIND:-127.0.0.1}:${PORT:-8000}:8000"
NGINX_HEALTH = ("exec 3<>/dev/tcp/127.0.0.1/8000 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 "
                "&& head -n 1 <&3 | grep -q ' 200 '")


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def pg_host(shard: Shard) -> str:
    parts = urlsplit(shard.dsn)
    if not parts.hostname:
        raise ConfigError(f"shard {shard.name}: the DSN has no host (a compose service name)")
    return parts.hostname


def addresses(topology: Topology) -> dict[str, int]:
    """Each service's fixed last number, by its place in the shard file (retired shards keep theirs)."""
    groups = [([pg_host(s) for s in topology.shards], FIRST_PG, FIRST_WRITER),
              ([host_port(a)[0] for s in topology.shards for a in s.writers], FIRST_WRITER, FIRST_AGGREGATOR),
              ([host_port(a)[0] for a in topology.aggregators], FIRST_AGGREGATOR, NGINX_HOST)]
    found: dict[str, int] = {}
    for names, first, limit in groups:
        unique = list(dict.fromkeys(names))
        if first + len(unique) > limit:
            raise ConfigError(f"too many services for the compose network's addresses from .{first}: {len(unique)}")
        found |= {name: first + i for i, name in enumerate(unique)}
    return found | {"nginx": NGINX_HOST}


def network(last: int) -> dict[str, Any]:
    return {NETWORK: {"ipv4_address": f"{NET}.{last}"}}


def python_service(command: str, port: int, env: dict[str, str], depends: dict[str, Any]) -> dict[str, Any]:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/readyz')"
    return {
        "build": images.build(images.SERVICE_IMAGE),
        "image": images.SERVICE_IMAGE,
        "command": ["python", "-m", command],
        "environment": {"REACTIONS_HOST": "0.0.0.0", "REACTIONS_PORT": str(port), **env},
        "secrets": ["pgpass"],
        "depends_on": depends,
        "healthcheck": {"test": ["CMD", "python", "-c", probe], **HEALTH},
        "restart": "unless-stopped",
    }


def postgres_service(shard: Shard) -> dict[str, Any]:
    return {
        "build": images.build(images.POSTGRES_IMAGE),
        "image": images.POSTGRES_IMAGE,
        # Only the compose network reaches it (no published port), with the password.
        "environment": images.postgres_env(shard, PASSWORD_IN_CONTAINER),
        "secrets": ["postgres_password"],
        "volumes": [f"{pg_host(shard)}-data:{images.PG_VOLUME_PATH}"],
        "healthcheck": {"test": ["CMD", *images.pg_ready_command(shard)], **HEALTH},
        "restart": "unless-stopped",
    }


def nginx_service(backends: list[str]) -> dict[str, Any]:
    return {
        "build": images.build(images.NGINX_IMAGE),
        "image": images.NGINX_IMAGE,
        "command": ["nginx", "-e", "stderr", "-c", NGINX_CONF_IN_CONTAINER, "-g", "daemon off;"],
        "volumes": [CONFIG_MOUNT],
        "ports": [PUBLISHED],
        "depends_on": {name: {"condition": "service_healthy"} for name in backends},
        "healthcheck": {"test": ["CMD", "bash", "-c", NGINX_HEALTH], **HEALTH},
        "restart": "unless-stopped",
    }


def services(topology: Topology) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for shard in topology.shards:
        found[pg_host(shard)] = postgres_service(shard)
    for shard in topology.active_shards:
        for address in shard.writers:
            host, port = host_port(address)
            # The shard file too: a writer places a batch's events as nginx would (docs/contract.md, Batches).
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
    found["nginx"] = nginx_service(backends + [host_port(a)[0] for a in topology.aggregators])
    fixed = addresses(topology)
    hosts = [f"{name}:{NET}.{last}" for name, last in fixed.items()]
    for name, service in found.items():
        service["networks"] = network(fixed[name])
        service["extra_hosts"] = list(hosts)
    return found


def render(topology: Topology) -> str:
    """The compose file as YAML text."""
    document = {"name": PROJECT, "services": services(topology),
                "networks": {NETWORK: {"ipam": {"config": [{"subnet": f"{NET}.0/24"}]}}},
                "volumes": {f"{pg_host(s)}-data": {} for s in topology.shards},
                "secrets": SECRETS}
    header = ("# Rendered by `python -m sharding render-compose --shards-file docker/shards.json`;\n"
              "# edit docker/shards.json and render again (and docker/nginx.conf with render-nginx).\n"
              "# `make docker-up` makes the secrets, the base image and the wheelhouse, builds and starts.\n")
    # Block style throughout, keys in the order built here (services read top-down:
    # PostgreSQL, writers, aggregators, nginx); safe_dump quotes any string YAML
    # would read as another type (REACTIONS_PORT: '8080').
    return header + yaml.safe_dump(document, default_flow_style=False, sort_keys=False, allow_unicode=True)
