#!/bin/sh
# The Python services' entrypoint: the passfile to libpq's rules, then the
# service as the unprivileged user `reactions`.
#
# A compose file secret is the host's file mounted as it is (compose honours
# uid, gid and mode only under swarm): mode 0600 and owned by the host's user,
# so only root reads it here. Root copies it to /run/reactions/pgpass, owned by
# `reactions`, mode 0600 (libpq ignores a passfile others can read), then drops
# to `reactions` for good. Started as `reactions` already (Kubernetes'
# runAsUser), it copies a secret its group may read.
set -eu
secret=${REACTIONS_PGPASS_SECRET:-/run/secrets/pgpass}
passfile=/run/reactions/pgpass

if [ -f "$secret" ]; then
  if [ "$(id -u)" = 0 ]; then
    install -o reactions -g reactions -m 0600 "$secret" "$passfile"
  else
    (umask 077 && cat "$secret" > "$passfile")
  fi
  export PGPASSFILE="$passfile"
fi
if [ "$(id -u)" = 0 ]; then
  export HOME=/app  # not root's: libpq and asyncpg look for client certificates there
  exec setpriv --reuid=reactions --regid=reactions --init-groups --inh-caps=-all -- "$@"
fi
exec "$@"
