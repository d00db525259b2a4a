"""Kubernetes manifests rendered from a shard file whose addresses are Service names.

Like the compose file (sharding/compose.py): each shard's DSN host is a
PostgreSQL StatefulSet (with its volume claim) behind a Service of that
name; each writer address ``writer-a:8080`` is a Deployment and a Service;
the aggregators are one Deployment with as many replicas as the file lists
aggregators, behind the Service ``aggregator``; nginx runs the configuration
rendered from the same template (sharding/nginx.py), its aggregator upstream
being that Service. The shard file reaches the aggregators as a ConfigMap
(mounted as a directory, so that an update reaches them without a restart).

The images are compose's (sharding/images.py), and every pod runs as its
image's unprivileged user; PostgreSQL's volume claim gets that user's group
(``fsGroup``). Secrets come from Kubernetes: the manifests reference a Secret
``reactions-postgres`` (keys ``password`` and ``pgpass``) that the user
creates; nothing here holds a password. The services' entrypoint copies the
pgpass key into a memory volume with mode 0600, as libpq and asyncpg require.
Pure data dumped by PyYAML: no cluster is needed to render or to validate it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from sharding import images, nginx
from sharding.compose import host_port, pg_host
from sharding.config import Shard, Topology

# nginx's ConfigMap (nginx.conf and the cache keys' njs code) is mounted here.
NGINX_CONF_DIR = "/etc/reactions/nginx"
SECRET = "reactions-postgres"
AGGREGATOR_SERVICE = "aggregator"
ENTRY_SERVICE = "reactions"
ENTRY_PORT = 8000
# A writer closes its main port while its database cannot commit (docs/design.md, Writer):
# its probes use this second port, which stays open, so the pod is not restarted for it.
WRITER_ADMIN_PORT = 9000
VOLUME_SIZE = "10Gi"
CONFIG_DIR = "/etc/reactions/config"
SECRET_DIR = "/etc/reactions/secret"
# Where the services' entrypoint writes its 0600 copy of the passfile (docker/python/entrypoint.sh).
PGPASS_DIR = "/run/reactions"
LABEL = "app.kubernetes.io/name"


def probe(path: str, port: int, period_s: int = 5) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period_s, "timeoutSeconds": 2,
            "failureThreshold": 3}


def service(name: str, port: int, selector: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, "ports": [{"name": "main", "port": port, "targetPort": port}]}}


def security(uid: int) -> dict[str, Any]:
    """The pod runs as its image's unprivileged user; its volumes belong to that user's group."""
    return {"runAsUser": uid, "runAsGroup": uid, "fsGroup": uid, "runAsNonRoot": True}


def secret_volume(key: str) -> dict[str, Any]:
    """One key of the Secret, readable by the pod's group (fsGroup) only."""
    return {"name": "secret", "secret": {"secretName": SECRET, "defaultMode": 0o440,
                                         "items": [{"key": key, "path": key}]}}


def python_deployment(name: str, replicas: int, command: str, port: int, env: dict[str, str],
                      probe_port: int, extra_volumes: list[dict[str, Any]] | None = None,
                      extra_mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    env = {"REACTIONS_HOST": "0.0.0.0", "REACTIONS_PORT": str(port),
           "REACTIONS_PGPASS_SECRET": f"{SECRET_DIR}/pgpass", **env}
    container = {
        # args, not command: the image's entrypoint copies the passfile first.
        "name": name.split("-")[0], "image": images.SERVICE_IMAGE, "args": ["python", "-m", command],
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"containerPort": port}],
        "readinessProbe": probe("/readyz", probe_port, 2),
        "livenessProbe": probe("/healthz", probe_port),
        "volumeMounts": [{"name": "secret", "mountPath": SECRET_DIR, "readOnly": True},
                         {"name": "pgpass", "mountPath": PGPASS_DIR}, *(extra_mounts or [])],
    }
    volumes = [secret_volume("pgpass"), {"name": "pgpass", "emptyDir": {"medium": "Memory"}}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {LABEL: name}},
                     "template": {"metadata": {"labels": {LABEL: name}},
                                  "spec": {"securityContext": security(images.SERVICE_UID),
                                           "containers": [container],
                                           "volumes": [*volumes, *(extra_volumes or [])]}}}}


def postgres(shard: Shard) -> list[dict[str, Any]]:
    name, url = pg_host(shard), urlsplit(shard.dsn)
    env = images.postgres_env(shard, f"{SECRET_DIR}/password")
    ready = {"exec": {"command": images.pg_ready_command(shard)}, "periodSeconds": 5}
    container = {"name": "postgres", "image": images.POSTGRES_IMAGE, "ports": [{"containerPort": images.PG_PORT}],
                 "env": [{"name": k, "value": v} for k, v in env.items()],
                 "readinessProbe": ready, "livenessProbe": {**ready, "failureThreshold": 6},
                 "volumeMounts": [{"name": "data", "mountPath": images.PG_VOLUME_PATH},
                                  {"name": "secret", "mountPath": SECRET_DIR, "readOnly": True}]}
    labels = {LABEL: name}
    statefulset = {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
        "spec": {"serviceName": name, "replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"securityContext": security(images.POSTGRES_UID),
                                       "containers": [container], "volumes": [secret_volume("password")]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                           "spec": {"accessModes": ["ReadWriteOnce"],
                                                    "resources": {"requests": {"storage": VOLUME_SIZE}}}}]}}
    return [service(name, url.port or images.PG_PORT, labels), statefulset]


def topology_volume() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The shard file's ConfigMap as a volume, and its mount at CONFIG_DIR."""
    return ([{"name": "topology", "configMap": {"name": "reactions-topology"}}],
            [{"name": "topology", "mountPath": CONFIG_DIR, "readOnly": True}])


def writers(shard: Shard) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for address in shard.writers:
        name, port = host_port(address)
        # The shard file too: a writer places a batch's events as nginx would (docs/contract.md, Batches).
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
    """nginx from the same template and image as compose; its reads go to the aggregator Service."""
    port = host_port(topology.aggregators[0])[1]
    routed = Topology(shards=topology.shards, aggregators=(f"{AGGREGATOR_SERVICE}:{port}",))
    conf = nginx.render(routed, nginx.NginxLayout.container(ENTRY_PORT), source)
    labels = {LABEL: "nginx"}
    container = {"name": "nginx", "image": images.NGINX_IMAGE,
                 "command": ["nginx", "-e", "stderr", "-c", f"{NGINX_CONF_DIR}/nginx.conf", "-g", "daemon off;"],
                 "ports": [{"containerPort": ENTRY_PORT}],
                 "readinessProbe": probe("/readyz", ENTRY_PORT, 2), "livenessProbe": probe("/healthz", ENTRY_PORT),
                 "volumeMounts": [{"name": "conf", "mountPath": NGINX_CONF_DIR, "readOnly": True},
                                  {"name": "cache", "mountPath": "/var/cache/nginx"}]}
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "reactions-nginx"},
             "data": {"nginx.conf": conf}},
            service(ENTRY_SERVICE, ENTRY_PORT, labels),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nginx"},
             "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                      "template": {"metadata": {"labels": labels},
                                   "spec": {"securityContext": security(images.NGINX_UID),
                                            "containers": [container],
                                            "volumes": [{"name": "conf", "configMap": {"name": "reactions-nginx"}},
                                                        {"name": "cache", "emptyDir": {}}]}}}}]


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
              f"# Needs the Secret {SECRET} (keys: password, pgpass): docs/operations.md, Kubernetes.\n")
    return header + yaml.dump_all(manifests(topology, shards_file_text, source), Dumper=PlainDumper,
                                  default_flow_style=False, sort_keys=False)
