"""docker compose: what can be checked without a Docker engine.

Checked here: the committed compose file and nginx configuration are what the
shard file renders to; the compose file parses and its services hang
together; the compose nginx configuration passes ``nginx -t`` (service names
replaced by 127.0.0.1, as nothing resolves them here); the services' image
commands run outside Docker. Not run: building the image, pulling
postgres/nginx images, starting the stack with a Docker engine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sharding import compose, nginx
from sharding.config import ConfigError, Shard, Topology, load
from sharding.local.postgres import LocalPostgres
from sharding.local.processes import free_port, spawn, stop, wait_ready
from tests.support.tmpdirs import world_traversable_tmpdir

ROOT = Path(__file__).resolve().parents[2]
SHARDS_FILE = ROOT / "docker" / "shards.json"


def compose_file() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_committed_files_are_rendered_from_the_shard_file() -> None:
    assert (ROOT / "docker-compose.yml").read_text() == compose.render(load(SHARDS_FILE)), \
        "run: python -m sharding render-compose --shards-file docker/shards.json > docker-compose.yml"
    rendered = subprocess.run([sys.executable, "-m", "sharding", "render-nginx", "--shards-file", "docker/shards.json"],
                              cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert (ROOT / "docker" / "nginx.conf").read_text() == rendered, \
        "run: python -m sharding render-nginx --shards-file docker/shards.json > docker/nginx.conf"
    assert (ROOT / "docker" / nginx.JS_NAME).read_text() == nginx.JS_FILE.read_text(), \
        "the compose nginx's cache keys: run: cp nginx/reactions.js docker/"
    assert f"js_import reactions from /etc/reactions/{nginx.JS_NAME};" in rendered


def test_compose_file_parses_and_its_services_hang_together() -> None:
    topology, services = load(SHARDS_FILE), compose_file()["services"]
    for shard in topology.shards:
        pg = compose.pg_host(shard)
        assert services[pg]["image"].startswith("postgres:")
        assert f"{pg}-data" in compose_file()["volumes"]
    for shard in topology.active_shards:
        for address in shard.writers:
            writer = services[address.split(":")[0]]
            assert writer["command"] == ["python", "-m", "writer.main"]
            assert writer["environment"]["REACTIONS_DSN"] == shard.dsn
            assert writer["environment"]["REACTIONS_PORT"] == address.split(":")[1]
    for address in topology.aggregators:
        aggregator = services[address.split(":")[0]]
        assert aggregator["environment"]["REACTIONS_SHARDS_FILE"] == "/etc/reactions/shards.json"
        assert "./docker:/etc/reactions:ro" in aggregator["volumes"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    assert services["nginx"]["ports"] == ["8000:8000"]
    assert f"./dashboard:{nginx.DASHBOARD_IN_CONTAINER}:ro" in services["nginx"]["volumes"]
    assert (ROOT / "dashboard" / "index.html").is_file()
    assert f"alias {nginx.DASHBOARD_IN_CONTAINER}/;" in (ROOT / "docker" / "nginx.conf").read_text()
    secrets = compose_file()["secrets"]
    for name, service in services.items():
        assert "POSTGRES_HOST_AUTH_METHOD" not in service.get("environment", {}), f"{name}: no trust"
        for secret in service.get("secrets", []):
            assert (secret["source"] if isinstance(secret, dict) else secret) in secrets
    assert "/etc/reactions/nginx.conf" in services["nginx"]["command"]


def test_compose_rejects_a_dsn_without_a_host() -> None:
    broken = Topology(shards=(Shard("a", ("writer-a:8080",), "postgresql:///reactions"),),
                      aggregators=("aggregator-1:8080",))
    with pytest.raises(ConfigError, match="no host"):
        compose.render(broken)


def test_the_compose_nginx_config_passes_nginx_t() -> None:
    runtime = world_traversable_tmpdir("reactions-compose-nginx-")
    text = (ROOT / "docker" / "nginx.conf").read_text()
    hosts = sorted(set(re.findall(r"server ([a-z0-9-]+):8080", text)))
    assert len(hosts) == len(load(SHARDS_FILE).active_shards) + len(load(SHARDS_FILE).aggregators)
    for host in hosts:  # nothing resolves compose service names here
        text = text.replace(f"server {host}:8080", f"server 127.0.0.1:{free_port()}")
    text = text.replace(f"/etc/reactions/{nginx.JS_NAME}", str(ROOT / "docker" / nginx.JS_NAME))
    text = text.replace("/var/cache/nginx", str(runtime)).replace("listen 8000;", f"listen 127.0.0.1:{free_port()};")
    conf = runtime / "nginx.conf"
    conf.write_text(text)
    nginx.check(conf, runtime)


def dockerfile_cmd() -> list[str]:
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    return json.loads(cmd[4:])


def test_the_image_commands_run_outside_docker(postgres: LocalPostgres, shard_dsn: str) -> None:
    services, root = compose_file()["services"], world_traversable_tmpdir("reactions-image-")
    shards_file = root / "shards.json"
    shards_file.write_text(json.dumps({"shards": [{"name": "a", "writers": ["127.0.0.1:1"], "dsn": shard_dsn}]}))
    assert dockerfile_cmd() == services["writer-a"]["command"]
    for name, env in [("writer-a", {"REACTIONS_DSN": shard_dsn, "REACTIONS_SHARDS_FILE": str(shards_file)}),
                      ("aggregator-1", {"REACTIONS_SHARDS_FILE": str(shards_file)})]:
        port = free_port()
        # Outside a container it listens on 127.0.0.1 only.
        env = {**services[name]["environment"], **env, "REACTIONS_HOST": "127.0.0.1", "REACTIONS_PORT": str(port),
               "PGPASSFILE": os.environ["PGPASSFILE"]}  # compose's secret is /run/secrets/pgpass
        argv = [sys.executable if a == "python" else a for a in services[name]["command"]]
        record = spawn(name, "check", argv, port=port, log=root / f"{name}.log", env=env, cwd=ROOT)
        try:
            wait_ready(record, timeout_s=30)
        finally:
            assert stop(record)
