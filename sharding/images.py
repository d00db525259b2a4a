"""The images that compose and Kubernetes run, and each shard's PostgreSQL settings: one place for both.

Every image is built by this project from debian:bookworm-slim with Debian's
packages (Dockerfile for the services, docker/*/Dockerfile, all from the repository root): nothing is pulled
but that base (``make docker-base`` makes it where it cannot be pulled).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from sharding.config import Shard

SERVICE_IMAGE = "reactions:latest"
POSTGRES_IMAGE = "reactions-postgres:15"
NGINX_IMAGE = "reactions-nginx:latest"
BUILD_CONTEXT = "."
DOCKERFILES = {SERVICE_IMAGE: "Dockerfile", POSTGRES_IMAGE: "docker/postgres/Dockerfile",
               NGINX_IMAGE: "docker/nginx/Dockerfile"}
# The unprivileged users the images run their processes as (Kubernetes' runAsUser and fsGroup).
SERVICE_UID = 10001
POSTGRES_UID = 999
NGINX_UID = 33  # Debian's www-data
# PostgreSQL keeps its data in a subdirectory of the volume (a fresh volume may hold lost+found).
PG_VOLUME_PATH = "/var/lib/postgresql/data"
PG_PORT = 5432
POSTGRES_MAX_CONNECTIONS = 300  # as a local shard (sharding/local/postgres.py)


def build(image: str) -> dict[str, str]:
    return {"context": BUILD_CONTEXT, "dockerfile": DOCKERFILES[image]}


def postgres_env(shard: Shard, password_file: str) -> dict[str, str]:
    """The PostgreSQL image's settings for a shard: its DSN's user and database, the password's file.

    The image initialises an empty volume with scram-sha-256 for every
    connection (docker/postgres/entrypoint.sh); there is no other mode.
    """
    url = urlsplit(shard.dsn)
    return {"POSTGRES_USER": url.username or "postgres", "POSTGRES_DB": url.path.lstrip("/") or "reactions",
            "POSTGRES_PASSWORD_FILE": password_file, "PGDATA": f"{PG_VOLUME_PATH}/pgdata",
            "POSTGRES_MAX_CONNECTIONS": str(POSTGRES_MAX_CONNECTIONS)}


def pg_ready_command(shard: Shard) -> list[str]:
    env = postgres_env(shard, "")
    return ["pg_isready", "-U", env["POSTGRES_USER"], "-d", env["POSTGRES_DB"]]
