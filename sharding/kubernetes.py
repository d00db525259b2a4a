"""Kubernetes manifests rendered from a shard file whose addresses are Service names.

Like the compose file (sharding/compose.py): each shard's DSN host is a
PostgreSQL StatefulSet (with its volume claim) behind a Service of that
name; each writer address ``writer-a:8080`` is a Deployment and a Service;
the aggregators are one Deployment with as many replicas as the file lists
aggregators, behind the Service ``aggregator``; nginx runs the configuration
rendered from the same template (sharding/nginx.py), its aggregator upstream
being that Service. The shard file reaches the aggregators as a ConfigMap
(mounted as a directory, so that an update reaches them without a restart).

Secrets come from Kubernetes: the manifests reference a Secret
``reactions-postgres`` (keys ``password`` and ``pgpass``) that the user
creates; nothing here holds a password. The pgpass key is copied by an init
container into a memory volume with mode 0600, as libpq and asyncpg require.
Pure data dumped by PyYAML: no cluster is needed to render or to validate it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from sharding import nginx
from sharding.compose import host_port, pg_host
from sharding.config import Shard, Topology

IMAGE = "reactions:latest"
POSTGRES_IMAGE = "postgres:15"
NGINX_IMAGE = "nginx:1.22"
# nginx's ConfigMap (nginx.conf and the cache keys' njs code) is mounted here.
NGINX_CONF_DIR = "/etc/reactions/nginx"
SECRET = "reactions-postgres"
AGGREGATOR_SERVICE = "aggregator"
ENTRY_SERVICE = "reactions"
ENTRY_PORT = 8000
# A writer closes its main port while its database cannot commit (README, Writer):
# its probes use this second port, which stays open, so the pod is not restarted for it.
WRITER_ADMIN_PORT = 9000
PG_PORT = 5432
VOLUME_SIZE = "10Gi"
CONFIG_DIR = "/etc/reactions/config"
PGPASS_DIR = "/run/reactions"
LABEL = "app.kubernetes.io/name"


def probe(path: str, port: int, period_s: int = 5) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period_s, "timeoutSeconds": 2,
            "failureThreshold": 3}


def service(name: str, port: int, selector: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, "ports": [{"name": "main", "port": port, "targetPort": port}]}}


def passfile_volumes() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The Secret's pgpass copied with mode 0600 into a memory volume (a Secret volume is not 0600 to its user)."""
    volumes = [{"name": "secret", "secret": {"secretName": SECRET, "defaultMode": 0o440,
                                             "items": [{"key": "pgpass", "path": "pgpass"}]}},
               {"name": "pgpass", "emptyDir": {"medium": "Memory"}}]
    init = {"name": "pgpass", "image": IMAGE,
            "command": ["sh", "-c", f"cp /secret/pgpass {PGPASS_DIR}/pgpass && chmod 600 {PGPASS_DIR}/pgpass"],
            "volumeMounts": [{"name": "secret", "mountPath": "/secret", "readOnly": True},
                             {"name": "pgpass", "mountPath": PGPASS_DIR}]}
    return volumes, init


def python_deployment(name: str, replicas: int, command: str, port: int, env: dict[str, str],
                      probe_port: int, extra_volumes: list[dict[str, Any]] | None = None,
                      extra_mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    volumes, init = passfile_volumes()
    env = {"REACTIONS_HOST": "0.0.0.0", "REACTIONS_PORT": str(port), "PGPASSFILE": f"{PGPASS_DIR}/pgpass", **env}
    container = {
        "name": name.split("-")[0], "image": IMAGE, "command": ["python", "-m", command],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"containerPort": port}],
        "readinessProbe": probe("/readyz", probe_port, 2),
        "livenessProbe": probe("/healthz", probe_port),
        "volumeMounts": [{"name": "pgpass", "mountPath": PGPASS_DIR, "readOnly": True}, *(extra_mounts or [])],
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {LABEL: name}},
                     "template": {"metadata": {"labels": {LABEL: name}},
                                  "spec": {"initContainers": [init], "containers": [container],
                                           "volumes": [*volumes, *(extra_volumes or [])]}}}}


def postgres(shard: Shard) -> list[dict[str, Any]]:
    name, url = pg_host(shard), urlsplit(shard.dsn)
    env = {"POSTGRES_USER": url.username or "postgres", "POSTGRES_DB": url.path.lstrip("/") or "reactions",
           "POSTGRES_PASSWORD_FILE": "/etc/reactions/secret/password",
           "POSTGRES_INITDB_ARGS": "--auth-host=scram-sha-256 --auth-local=scram-sha-256",
           "PGDATA": "/var/lib/postgresql/data/pgdata"}
    ready = {"exec": {"command": ["pg_isready", "-U", env["POSTGRES_USER"]]}, "periodSeconds": 5}
    container = {"name": "postgres", "image": POSTGRES_IMAGE, "ports": [{"containerPort": PG_PORT}],
                 "env": [{"name": k, "value": v} for k, v in env.items()],
                 "readinessProbe": ready, "livenessProbe": {**ready, "failureThreshold": 6},
                 "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"},
                                  {"name": "secret", "mountPath": "/etc/reactions/secret", "readOnly": True}]}
    labels = {LABEL: name}
    password = {"name": "secret", "secret": {"secretName": SECRET, "items": [{"key": "password", "path": "password"}]}}
    statefulset = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
        "spec": {"serviceName": name, "replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [container], "volumes": [password]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                           "spec": {"accessModes": ["ReadWriteOnce"],
                                                    "resources": {"requests": {"storage": VOLUME_SIZE}}}}]}}
    return [service(name, url.port or PG_PORT, labels), statefulset]


def topology_volume() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The shard file's ConfigMap as a volume, and its mount at CONFIG_DIR."""
    return ([{"name": "topology", "configMap": {"name": "reactions-topology"}}],
            [{"name": "topology", "mountPath": CONFIG_DIR, "readOnly": True}])


def writers(shard: Shard) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for address in shard.writers:
        name, port = host_port(address)
        # The shard file too: a writer places a batch's events as nginx would (README, Batches).
        env = {"REACTIONS_DSN": shard.dsn, "REACTIONS_ADMIN_PORT": str(WRITER_ADMIN_PORT),
               "REACTIONS_SHARDS_FILE": f"{CONFIG_DIR}/shards.json"}
        found += [service(name, port, {LABEL: name}),
                  python_deployment(name, 1, "writer.main", port, env, WRITER_ADMIN_PORT, *topology_volume())]
    return found


def aggregators(topology: Topology, shards_file: str) -> list[dict[str, Any]]:
    port = host_port(topology.aggregators[0])[1]
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "reactions-topology"},
              "data": {"shards.json": shards_file}}
    deployment = python_deployment(
        AGGREGATOR_SERVICE, len(topology.aggregators), "aggregator.main", port,
        {"REACTIONS_SHARDS_FILE": f"{CONFIG_DIR}/shards.json"}, port, *topology_volume())
    return [config, service(AGGREGATOR_SERVICE, port, {LABEL: AGGREGATOR_SERVICE}), deployment]


def entry(topology: Topology, source: str) -> list[dict[str, Any]]:
    """nginx from the same template; its reads go to the aggregator Service."""
    port = host_port(topology.aggregators[0])[1]
    routed = Topology(shards=topology.shards, aggregators=(f"{AGGREGATOR_SERVICE}:{port}",))
    conf = nginx.render(routed, nginx.NginxLayout.container(ENTRY_PORT, NGINX_CONF_DIR), source)
    labels = {LABEL: "nginx"}
    container = {"name": "nginx", "image": NGINX_IMAGE,
                 "command": ["nginx", "-c", f"{NGINX_CONF_DIR}/nginx.conf", "-g", "daemon off;"],
                 "ports": [{"containerPort": ENTRY_PORT}],
                 "readinessProbe": probe("/readyz", ENTRY_PORT, 2), "livenessProbe": probe("/healthz", ENTRY_PORT),
                 "volumeMounts": [{"name": "conf", "mountPath": NGINX_CONF_DIR, "readOnly": True},
                                  {"name": "dashboard", "mountPath": nginx.DASHBOARD_IN_CONTAINER, "readOnly": True}]}
    # The dashboard's static files (a few kilobytes) travel as a ConfigMap, as nginx's configuration does.
    dashboard = {f.name: f.read_text() for f in sorted(nginx.DASHBOARD_DIR.iterdir()) if f.is_file()}
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "reactions-nginx"},
             "data": {"nginx.conf": conf, nginx.JS_NAME: nginx.JS_FILE.read_text()}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "reactions-dashboard"},
             "data": dashboard},
            service(ENTRY_SERVICE, ENTRY_PORT, labels),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nginx"},
             "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels},
                                   "spec": {"containers": [container],
                                            "volumes": [{"name": "conf",
                                                         "configMap": {"name": "reactions-nginx"}},
                                                        {"name": "dashboard",
                                                         "configMap": {"name": "reactions-dashboard"}}]}}}}]


def manifests(topology: Topology, shards_file_text: str, source: str = "shard file") -> list[dict[str, Any]]:
    """Every object, in the order to create them: databases, writers, aggregators, then nginx."""
    found: list[dict[str, Any]] = []
    for shard in topology.shards:
        found += postgres(shard)
    for shard in topology.active_shards:
        found += writers(shard)
    return found + aggregators(topology, shards_file_text) + entry(topology, source)


class PlainDumper(yaml.SafeDumper):
    """No YAML anchors and aliases: each manifest reads on its own, as kubectl users expect."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(topology: Topology, shards_file_text: str, source: str = "shard file") -> str:
    header = (f"# Rendered by `python -m sharding render-kubernetes --shards-file {source}`; render again.\n"
              f"# Needs the Secret {SECRET} (keys: password, pgpass): README, Kubernetes.\n")
    return header + yaml.dump_all(manifests(topology, shards_file_text, source), Dumper=PlainDumper,
                                  default_flow_style=False, sort_keys=False)
