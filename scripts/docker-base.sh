#!/usr/bin/env bash
# The base of every Reactions image, debian:bookworm-slim: pulled when the
# engine can pull it, else made here (as root) the way the official image is
# made: debootstrap --variant=minbase bookworm, Debian's apt sources
# (bookworm, bookworm-updates, bookworm-security), no docs or man pages, and
# CMD ["bash"]; then `docker import`. Does nothing when the engine has it.
# DOCKER_HOST picks the engine; DEBIAN_MIRROR the archive (plain http).
set -euo pipefail

IMAGE=debian:bookworm-slim
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# A pull that cannot succeed (no route to the registry) gives up after this.
PULL_TIMEOUT_S=${DOCKER_PULL_TIMEOUT_S:-60}

docker image inspect "$IMAGE" >/dev/null 2>&1 && exit 0
if [ "${REACTIONS_DOCKER_BASE_BUILD:-}" != 1 ] && timeout "$PULL_TIMEOUT_S" docker pull -q "$IMAGE" >/dev/null 2>&1; then
  echo "pulled $IMAGE"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "cannot pull $IMAGE, and making it (debootstrap) needs root: sudo make docker-base" >&2
  exit 1
fi
command -v debootstrap >/dev/null 2>&1 || bash "$(dirname "$0")/docker-deps.sh"
echo "cannot pull $IMAGE: making it with debootstrap --variant=minbase bookworm ($MIRROR) ..."
root=$(mktemp -d /tmp/reactions-docker-base-XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || {
  tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

rm -f "$root/etc/apt/sources.list"
cat > "$root/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# As in the official slim image: no documentation, no apt caches left in layers.
cat > "$root/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKG
cat > "$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
echo 'Acquire::GzipIndexes "true";' > "$root/etc/apt/apt.conf.d/docker-gzip-indexes"
find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/cache/apt/*.bin \
  "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/tmp/*
tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
echo "made $IMAGE (docker import of debootstrap minbase bookworm)"
