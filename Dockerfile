# The image of the Python services (writers and aggregators; docker-compose.yml
# and the Kubernetes manifests pick the process with their command). Built from
# the repository root. The pinned wheels come from docker/wheelhouse, which
# `make docker-up` fills on the host (pip download of requirements-runtime.txt):
# nothing is fetched from PyPI inside the build.
FROM debian:bookworm-slim AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 reactions \
 && useradd --system --uid 10001 --gid reactions --home-dir /app --shell /usr/sbin/nologin reactions \
 && install -d -o reactions -g reactions -m 0700 /run/reactions

FROM base AS venv
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY requirements-runtime.txt /tmp/
COPY docker/wheelhouse /tmp/wheelhouse
RUN python3 -m venv /opt/reactions \
 && /opt/reactions/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
      --find-links /tmp/wheelhouse -r /tmp/requirements-runtime.txt

FROM base
ENV PATH=/opt/reactions/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REACTIONS_HOST=0.0.0.0 \
    REACTIONS_PORT=8080
COPY --from=venv /opt/reactions /opt/reactions
WORKDIR /app
COPY common ./common
COPY writer ./writer
COPY aggregator ./aggregator
COPY sharding ./sharding
COPY docker/python/entrypoint.sh /usr/local/bin/reactions-entrypoint
EXPOSE 8080
# Starts as root only to hand the passfile to the user `reactions`, then runs as it.
ENTRYPOINT ["reactions-entrypoint"]
CMD ["python", "-m", "writer.main"]
