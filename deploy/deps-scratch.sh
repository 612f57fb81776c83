#!/usr/bin/env bash
# Installs streamrec's dependencies without the lock into a scratch venv and runs tests there,
# so that upstream drift is found on purpose, not by a failing CI:
#   deploy/deps-scratch.sh latest   the newest versions pyproject.toml allows, unit tests
#   deploy/deps-scratch.sh oldest   the reader on the lowest base dependencies, its tests
# The scratch venv is var/deps-<mode>; the project's own venv and the lock are not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: $0 latest|oldest}
PYTHON=${PYTHON:-python3}
venv=var/deps-$mode
rm -rf "$venv"
"$PYTHON" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"})
"${pip[@]}" --upgrade pip
case "$mode" in
  latest)
    "${pip[@]}" --upgrade --upgrade-strategy eager '.[worker,train,dev]'
    echo "deps-latest: what differs from requirements.lock:"
    "$venv/bin/python" deploy/lockfile.py check requirements.lock 2>&1 | sed 's/^/  /' || true
    "$venv/bin/python" -m pytest tests/unit -q -p no:cacheprovider
    ;;
  oldest)
    # The lowest version each base dependency's range admits ("redis>=5.0,<9" -> redis==5.0).
    lowest=$("$venv/bin/python" - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(re.sub(r">=([^,]+).*", r"==\1", d) for d in deps))
PY
)
    echo "deps-oldest: $lowest"
    # shellcheck disable=SC2086
    "${pip[@]}" $lowest pytest pytest-timeout
    # --noconftest: the shared fixtures train a model (torch); the reader's tests need none.
    "$venv/bin/python" -m pytest --noconftest -q -p no:cacheprovider \
      tests/unit/serving/test_reader.py tests/unit/serving/test_reader_install.py
    ;;
  *) echo "usage: $0 latest|oldest" >&2; exit 2 ;;
esac
