#!/usr/bin/env bash
# Validate docker-compose.yml with a compose implementation's `config` (no daemon needed):
# `docker compose` (v2) if present, else `docker-compose` (v1, Debian's package), which is
# installed with apt-get when missing and this runs as root (CI machines).
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "check-compose: installing docker-compose (apt-get) to validate docker-compose.yml" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null
  compose=(docker-compose)
else
  echo "check-compose: no compose implementation (docker compose or docker-compose) to validate docker-compose.yml; install one" >&2
  exit 1
fi
COMPOSE_PROFILES=train "${compose[@]}" -f docker-compose.yml config -q
echo "docker-compose.yml: valid (${compose[*]} config)"
