"""requirements.lock, the one lock every install path uses (make venv, the images, CI).

    python deploy/lockfile.py tidy requirements.lock    # after pip-compile (make lock)
    python deploy/lockfile.py check requirements.lock   # in make check

``tidy`` drops the project's own entry (``streamrec @ file:///…``, which pip-compile
writes because the ``train`` extra names ``streamrec[worker]``): it names a path on the
machine that made the lock, and the project is installed from the work tree anyway.

``check`` compares the running interpreter's environment with the lock: it fails when
an installed distribution is missing from the lock or has another version, and when a
locked one is not installed. Standard library only: it runs before anything else does.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

PROJECT = "streamrec"
# A requirement line of the lock: ``name==version \`` (hashes and comments follow).
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def canonical(name: str) -> str:
    """PEP 503: ``Jinja2``, ``typing_extensions`` and ``typing-extensions`` are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: str) -> dict[str, str]:
    """The lock's ``name == version`` pairs, by canonical name."""
    found = (PIN.match(line) for line in lock.splitlines())
    return {canonical(m[1]): m[2] for m in found if m}


# pip-compile's note above an entry it cannot hash: the project's own, which tidy drops.
HASH_WARNING = ("# WARNING: pip install will require the following package to be hashed.",
                "# Consider using a hashable URL like")


def tidy(lock: str) -> str:
    """The lock without the project's own entry (its line, its ``# via`` comments and the
    warning pip-compile writes above it)."""
    out: list[str] = []
    skipping = False
    for line in lock.splitlines():
        if re.match(rf"^{PROJECT}\s*@", line):
            skipping = True
            while out and out[-1].startswith(HASH_WARNING):
                out.pop()
            continue
        if skipping and line.startswith("    "):
            continue
        skipping = False
        out.append(line)
    return "\n".join(out) + "\n"


def installed() -> dict[str, str]:
    """The running environment's distributions, by canonical name (the project excluded)."""
    dists = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    dists.pop(PROJECT, None)
    return dists


def differences(locked: dict[str, str], have: dict[str, str]) -> list[str]:
    """One line per difference between the lock and an environment; empty when they agree."""
    lines = [f"{name}=={have[name]} is installed, the lock names {locked[name]}"
             for name in sorted(locked.keys() & have.keys()) if have[name] != locked[name]]
    lines += [f"{name}=={have[name]} is installed but not in the lock"
              for name in sorted(have.keys() - locked.keys())]
    lines += [f"{name}=={locked[name]} is in the lock but not installed"
              for name in sorted(locked.keys() - have.keys())]
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("tidy", "check"):
        print("usage: lockfile.py tidy|check requirements.lock", file=sys.stderr)
        return 2
    command, path = argv[0], Path(argv[1])
    if not path.is_file():
        print(f"lockfile: {path} does not exist (make lock writes it)", file=sys.stderr)
        return 2
    if command == "tidy":
        path.write_text(tidy(path.read_text()))
        return 0
    problems = differences(pins(path.read_text()), installed())
    for line in problems:
        print(f"lockfile: {line}", file=sys.stderr)
    if problems:
        print(f"lockfile: {sys.prefix} does not match {path}; run 'make venv' (or 'make lock' "
              "if pyproject.toml changed)", file=sys.stderr)
        return 1
    print(f"lockfile: {sys.prefix} matches {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
