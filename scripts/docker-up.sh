#!/usr/bin/env bash
# make docker-up: Reactions under Docker compose, from a fresh clone.
# Makes the secrets if they are missing (mode 0600; git ignores docker/secrets/),
# the base image if the engine cannot pull it, the wheelhouse; builds the
# images, starts the stack, waits until nginx answers a read exactly (a 200 not
# marked stale), and says where things are. DOCKER_HOST picks the engine;
# PORT (default 8000) is published on REACTIONS_BIND (default 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
COMPOSE=${COMPOSE:-docker-compose}
PORT=${PORT:-8000}
BIND=${REACTIONS_BIND:-127.0.0.1}
UP_TIMEOUT_S=${REACTIONS_DOCKER_UP_TIMEOUT_S:-300}
export PORT REACTIONS_BIND=$BIND
# Without buildx, compose builds with the engine itself; say so rather than warn about Bake.
export COMPOSE_BAKE=${COMPOSE_BAKE:-false}
started=$(date +%s)
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -s docker/secrets/postgres_password ] || [ ! -s docker/secrets/pgpass ]; then
  mkdir -p docker/secrets
  (umask 077
   python3 -c 'import secrets; print(secrets.token_hex(32))' > docker/secrets/postgres_password
   printf '*:*:*:postgres:%s\n' "$(cat docker/secrets/postgres_password)" > docker/secrets/pgpass)
  say "made docker/secrets/postgres_password and docker/secrets/pgpass (mode 0600, never committed)"
fi
chmod 0600 docker/secrets/postgres_password docker/secrets/pgpass

bash scripts/docker-base.sh
bash scripts/docker-wheelhouse.sh
say "building the images (debian:bookworm-slim and Debian's packages) ..."
$COMPOSE build --quiet
say "built in $(( $(date +%s) - started ))s; starting ..."
$COMPOSE up -d --quiet-pull

# Where the published port is: this machine, or the engine's host when DOCKER_HOST names one.
host=127.0.0.1
case "${DOCKER_HOST:-}" in
  tcp://*|ssh://*) host=${DOCKER_HOST#*://}; host=${host#*@}; host=${host%%:*} ;;
esac
[ "$BIND" = 0.0.0.0 ] || [ "$host" != 127.0.0.1 ] || host=$BIND
url="http://$host:$PORT"
say "waiting until $url answers exactly ..."
python3 - "$url" "$UP_TIMEOUT_S" <<'PY'
import sys, time, urllib.error, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
probe = f"{url}/analytics?timestamp={int(time.time() * 1000)}"
last = "no answer"
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(probe, timeout=3) as answer:
            if answer.status == 200 and not answer.headers.get("X-Reactions-Stale"):
                sys.exit(0)
            last = f"{answer.status}"
    except urllib.error.HTTPError as exc:
        last = f"{exc.code} {exc.read().decode(errors='replace').strip()}"
    except OSError as exc:
        last = str(exc)
    time.sleep(0.5)
sys.exit(f"{url} did not answer exactly within {sys.argv[2]}s (last: {last}); see: {' '.join(sys.argv[3:]) or 'docker compose ps, docker compose logs'}")
PY
say "Reactions answers on $url ($(( $(date +%s) - started ))s)"
cat <<TEXT
  API:        $url/analytics   (POST /analytics?timestamp=&user=&event=, GET /analytics?timestamp=)
  dashboard:  $url/
  services:   $COMPOSE ps        logs: $COMPOSE logs -f nginx writer-a ...
  data:       the volumes $($COMPOSE config --volumes | tr '\n' ' ')(kept by make docker-down)
  secrets:    docker/secrets/ (mode 0600)
  stop:       make docker-down   (keeps the data; docker compose down -v removes it)
TEXT
