#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to run Reactions locally:
# nginx with its njs module and the PostgreSQL server binaries, wrk (a C HTTP load generator,
# for make bench), Prometheus with promtool (make monitor, and the tests of
# monitoring/), iproute2 and nftables (the gray-failure tests run
# PostgreSQL in network namespaces and cut them off with an nftables rule),
# and headless Chromium with its chromedriver (the dashboard's browser tests:
# Debian's builds, as no browser download can be fetched at test time).
# Does nothing when they are there.
set -euo pipefail

have_pg() { command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; }
have_nginx() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }

missing=()
have_nginx || missing+=(nginx-light)
# njs, for the GET cache's keys (nginx/reactions.js); loads into nginx-light.
[ -f /usr/lib/nginx/modules/ngx_http_js_module.so ] || missing+=(libnginx-mod-http-js)
have_pg || missing+=(postgresql)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Reactions needs: ${missing[*]}. Install them (sudo apt-get install ${missing[*]}) and retry." >&2
    exit 1
  fi
  echo "installing ${missing[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PostgreSQL refuses to run as root: make sure its OS user exists.
if [ "$(id -u)" -eq 0 ] && ! id -u "${REACTIONS_PG_OS_USER:-postgres}" >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin "${REACTIONS_PG_OS_USER:-postgres}"
fi
