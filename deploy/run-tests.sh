#!/usr/bin/env bash
# Runs the whole suite against real local services, then stops what it started.
set -uo pipefail
cd "$(dirname "$0")/.."
started_before=$(ls var/run/*.pid 2>/dev/null || true)
deploy/local.sh up || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
# Stop only services this run started (pid files that did not exist before).
[ -z "$started_before" ] && deploy/local.sh down
[ $rc -eq 5 ] && { echo "pytest collected no tests" >&2; exit 1; }
exit $rc
