#!/bin/sh
# A shard's PostgreSQL: initialise an empty PGDATA once, then run the server
# as postgres. The password comes from POSTGRES_PASSWORD_FILE (a compose
# secret: the host's file as it is, so only root reads it; root hands a copy to
# postgres for initdb and removes it). Started as postgres already
# (Kubernetes' runAsUser, fsGroup on the volume), it reads the secret itself.
set -eu
: "${PGDATA:?}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=reactions}"
: "${POSTGRES_PASSWORD_FILE:=/run/secrets/postgres_password}"

initialise() {  # as postgres; $1: a file holding the password alone
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$1" --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  cat >> "$PGDATA/postgresql.conf" <<CONF

# Reactions shard (docker/postgres/entrypoint.sh)
listen_addresses = '*'
max_connections = ${POSTGRES_MAX_CONNECTIONS:-300}
synchronous_commit = on
fsync = on
password_encryption = 'scram-sha-256'
CONF
  # Any client of the container network, always with the password.
  printf '\n# Reactions: every client address, with the password\nhost all all all scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE \"$POSTGRES_DB\"" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "reactions-postgres: initialised $PGDATA (scram-sha-256, database $POSTGRES_DB)"
}

if [ "${1:-}" = --initialise ]; then
  initialise "$2"
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  export HOME=/var/lib/postgresql
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password=$(mktemp)
    install -o postgres -g postgres -m 0600 "$POSTGRES_PASSWORD_FILE" "$password"
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$0" --initialise "$password" || { rm -f "$password"; exit 1; }
    rm -f "$password"
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups --inh-caps=-all -- "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chmod 0700 "$PGDATA"
  initialise "$POSTGRES_PASSWORD_FILE"
fi
exec "$@"
