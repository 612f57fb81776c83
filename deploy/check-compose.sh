#!/usr/bin/env bash
# Validate docker-compose.yml with a compose implementation's `config` (no daemon needed):
# `docker compose` (v2) if present, else `docker-compose` (v1, Debian's package); then the
# monitoring it mounts (deploy/monitoring/prometheus) with `promtool check config` (which
# checks the alert rules too). Tools that are missing are installed with apt-get when this
# runs as root (CI machines): docker-compose, and promtool from Debian's prometheus package.
set -euo pipefail
cd "$(dirname "$0")/.."

updated=0
apt_install() {  # apt_install PACKAGE WHY
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    return 1
  fi
  echo "check-compose: installing $1 (apt-get) $2" >&2
  if [ "$updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$1" >/dev/null
}

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif apt_install docker-compose "to validate docker-compose.yml"; then
  compose=(docker-compose)
else
  echo "check-compose: no compose implementation (docker compose or docker-compose) to validate docker-compose.yml; install one" >&2
  exit 1
fi
COMPOSE_PROFILES=train "${compose[@]}" -f docker-compose.yml config -q
echo "docker-compose.yml: valid (${compose[*]} config)"

if ! command -v promtool >/dev/null 2>&1 \
    && ! apt_install prometheus "for promtool, to check deploy/monitoring/prometheus"; then
  echo "check-compose: promtool missing (Debian: apt-get install prometheus); install it to check deploy/monitoring/prometheus" >&2
  exit 1
fi
for check in "config deploy/monitoring/prometheus/prometheus.yml" \
             "rules deploy/monitoring/prometheus/alerts.yml"; do
  # shellcheck disable=SC2086 # two words: the check and its file
  if ! out=$(promtool check $check 2>&1); then
    echo "$out" >&2
    exit 1
  fi
done
echo "deploy/monitoring/prometheus: valid (promtool check config, check rules)"
