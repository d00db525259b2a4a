"""The Kubernetes manifests: rendered from the shard file, valid against Kubernetes' own schemas (offline).

No cluster was run here: kubernetes-validate checks every object against the
OpenAPI schemas of Kubernetes 1.37 that it ships (strict: no unknown field).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sharding import compose, images, kubernetes, nginx
from sharding.config import load
from sharding.local.processes import free_port
from tests.support.tmpdirs import world_traversable_tmpdir

ROOT = Path(__file__).resolve().parents[2]
SHARDS_FILE = ROOT / "kubernetes" / "shards.json"
KUBERNETES_VERSION = "1.37.0"


def objects() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((ROOT / "kubernetes" / "reactions.yaml").read_text()) if doc]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects() if o["kind"] == kind}


def test_the_committed_manifests_are_what_the_shard_file_renders_to() -> None:
    rendered = subprocess.run([sys.executable, "-m", "sharding", "render-kubernetes", "--shards-file",
                               "kubernetes/shards.json"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert (ROOT / "kubernetes" / "reactions.yaml").read_text() == rendered, \
        "run: python -m sharding render-kubernetes --shards-file kubernetes/shards.json > kubernetes/reactions.yaml"


def test_every_object_is_valid_against_the_kubernetes_schemas() -> None:
    found = objects()
    assert {o["kind"] for o in found} == {"Service", "StatefulSet", "Deployment", "ConfigMap"}
    for obj in found:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_a_broken_object_is_caught_by_the_validation() -> None:
    broken = objects()[1]
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["spec"]["template"]["spec"]["containers"])


def test_each_shard_has_its_database_with_a_claim_and_its_writers() -> None:
    topology, statefulsets, deployments, services = load(SHARDS_FILE), by_kind("StatefulSet"), \
        by_kind("Deployment"), by_kind("Service")
    for shard in topology.shards:
        pg = statefulsets[kubernetes.pg_host(shard)]
        assert pg["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
        assert kubernetes.pg_host(shard) in services
        env = {e["name"]: e["value"] for e in containers(pg)[0]["env"]}
        assert env["POSTGRES_PASSWORD_FILE"]
    for shard in topology.active_shards:
        for address in shard.writers:
            name, port = address.split(":")
            writer = containers(deployments[name])[0]
            env = {e["name"]: e["value"] for e in writer["env"]}
            assert env["REACTIONS_DSN"] == shard.dsn and env["REACTIONS_PORT"] == port
            assert services[name]["spec"]["ports"][0]["port"] == int(port)


def test_probes_secrets_and_replicas() -> None:
    deployments = by_kind("Deployment")
    assert deployments["aggregator"]["spec"]["replicas"] == len(load(SHARDS_FILE).aggregators)
    for name, deployment in deployments.items():
        container = containers(deployment)[0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
    env_names = {e["name"] for o in objects() if o["kind"] in ("Deployment", "StatefulSet")
                 for c in containers(o) for e in c.get("env", [])}
    assert not env_names & {"PGPASSWORD", "POSTGRES_PASSWORD"}, "no password in an environment variable"
    secrets = {v["secret"]["secretName"] for o in objects() if o["kind"] in ("Deployment", "StatefulSet")
               for v in o["spec"]["template"]["spec"].get("volumes", []) if "secret" in v}
    assert secrets == {kubernetes.SECRET}, "every password comes from the one Secret, by reference"
    assert not [o for o in objects() if o["kind"] == "Secret"], "the manifests hold no secret"


def test_the_nginx_config_map_passes_nginx_t() -> None:
    text = by_kind("ConfigMap")["reactions-nginx"]["data"]["nginx.conf"]
    runtime = world_traversable_tmpdir("reactions-kube-nginx-")
    for host in sorted(set(re.findall(r"server ([a-z0-9-]+):8080", text))):  # nothing resolves Service names here
        text = text.replace(f"server {host}:8080", f"server 127.0.0.1:{free_port()}")
    text = text.replace(nginx.JS_IN_IMAGE, str(nginx.JS_FILE))  # the nginx image's copy of it
    text = text.replace("/var/cache/nginx", str(runtime)).replace("listen 8000;", f"listen 127.0.0.1:{free_port()};")
    conf = runtime / "nginx.conf"
    conf.write_text(text)
    nginx.check(conf, runtime)
    assert "server aggregator:8080" in by_kind("ConfigMap")["reactions-nginx"]["data"]["nginx.conf"]


def test_the_images_are_composes_and_run_unprivileged() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    compose_images = {s["image"] for s in services.values()}
    pods = [o["spec"]["template"]["spec"] for o in objects() if o["kind"] in ("Deployment", "StatefulSet")]
    assert {c["image"] for pod in pods for c in pod["containers"]} == compose_images
    for pod in pods:
        context = pod["securityContext"]
        assert context["runAsNonRoot"] and context["runAsUser"] > 0 and context["fsGroup"] == context["runAsGroup"]
    for pg in by_kind("StatefulSet").values():
        # PostgreSQL's volume claim belongs to its unprivileged user's group.
        assert pg["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == images.POSTGRES_UID
        env = {e["name"]: e["value"] for e in containers(pg)[0]["env"]}
        shard = next(s for s in load(SHARDS_FILE).shards if kubernetes.pg_host(s) == pg["metadata"]["name"])
        assert env == images.postgres_env(shard, f"{kubernetes.SECRET_DIR}/password")
    for name, deployment in by_kind("Deployment").items():
        if name != "nginx":  # the entrypoint copies the passfile: args, never command
            assert "command" not in containers(deployment)[0] and containers(deployment)[0]["args"][0] == "python"
    assert compose.pg_host is kubernetes.pg_host
