#!/usr/bin/env bash
# The pinned runtime wheels (requirements-runtime.txt) for the Python image,
# downloaded here on the host into docker/wheelhouse, the build context's copy:
# the image's build installs them with --no-index and reaches no package index
# (nor needs this host's certificates). Wheels for Debian bookworm's Python
# 3.11 on the engine's architecture; nothing is built from source.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
DEST=docker/wheelhouse

case "$(docker version -f '{{.Server.Arch}}' 2>/dev/null || uname -m)" in
  amd64|x86_64) arch=x86_64 ;;
  arm64|aarch64) arch=aarch64 ;;
  *) echo "no wheels chosen for this engine's architecture" >&2; exit 1 ;;
esac
mkdir -p "$DEST"
# Wheels the pins no longer name would go into the image too: start afresh when the pins change.
stamp="$DEST/.requirements-$(sha256sum requirements-runtime.txt | cut -c1-16)-$arch"
if [ -f "$stamp" ]; then exit 0; fi
rm -rf "${DEST:?}"/* "$DEST"/.requirements-*
"$PIP" download --quiet --disable-pip-version-check --no-cache-dir --dest "$DEST" --only-binary=:all: \
  --python-version 3.11 --implementation cp --abi cp311 --platform "manylinux_2_36_$arch" --platform "manylinux_2_28_$arch" \
  --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch" \
  -r requirements-runtime.txt
touch "$stamp"
echo "wheelhouse: $(ls "$DEST"/*.whl | wc -l) wheels in $DEST"
