"""requirements.lock is the one lock of every install path, and pyproject.toml declares
what each part of the code imports."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
spec = importlib.util.spec_from_file_location("lockfile", ROOT / "deploy/lockfile.py")
assert spec and spec.loader
lockfile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lockfile)

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCK = (ROOT / "requirements.lock").read_text()
# Which packages may import what: the base and worker dependencies everywhere, the train
# extra's in training/ and bench/ (its naive baseline runs torch eager) only: the worker
# must never need torch or tqdm.
PARTS = {"streamrec": ("worker",), "streams": ("worker",), "serving": ("worker",), "cli": ("worker",),
         "bench": ("worker", "train"), "training": ("worker", "train")}
OUR_PACKAGES = set(PARTS) | {"tests"}


def _name(requirement: str) -> str:
    return lockfile.canonical(re.split(r"[=<>\[ ;!~]", requirement, maxsplit=1)[0])


def declared(extras: tuple[str, ...]) -> set[str]:
    names = {_name(d) for d in PROJECT["dependencies"]}
    for extra in extras:
        names |= {_name(d) for d in PROJECT["optional-dependencies"][extra]}
    return names - {"streamrec"}


def imported_distributions(package: str) -> set[str]:
    """The distributions whose modules ``package`` imports anywhere (top level or not)."""
    modules: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | OUR_PACKAGES | {"__future__"}
    by_module = metadata.packages_distributions()
    return {lockfile.canonical(d) for m in modules for d in by_module.get(m, [m])}


# Imported only where a command says to install it when it is missing: bench-broker's
# fast producer (bench/broker.py: "needs confluent-kafka (the dev extra)").
OPTIONAL = {"confluent-kafka"}


@pytest.mark.parametrize("package", sorted(PARTS))
def test_every_import_is_declared_where_its_code_is_installed(package: str) -> None:
    missing = imported_distributions(package) - declared(PARTS[package]) - OPTIONAL
    assert not missing, f"{package}/ imports undeclared distributions: {sorted(missing)}"


def test_tqdm_is_the_trainers_not_the_workers() -> None:
    assert "tqdm" not in declared(("worker",))
    assert "tqdm" in declared(("train",))


def test_the_readers_base_dependencies_are_ranges_not_pins() -> None:
    for requirement in PROJECT["dependencies"]:
        assert "==" not in requirement and ">=" in requirement and "<" in requirement, requirement


def test_the_lock_pins_every_declared_dependency_with_hashes() -> None:
    locked = lockfile.pins(LOCK)
    every_extra = tuple(PROJECT["optional-dependencies"])
    assert declared(every_extra) <= locked.keys(), declared(every_extra) - locked.keys()
    blocks = re.split(r"\n(?=[a-z0-9])", LOCK.split("\n\n", 1)[-1])
    for block in blocks:
        if lockfile.PIN.match(block):
            assert "--hash=sha256:" in block, block.splitlines()[0]
    assert "streamrec @" not in LOCK, "make lock must tidy the project's own entry away"
    assert "# WARNING" not in LOCK


def test_tidy_drops_the_projects_own_entry_and_keeps_the_rest() -> None:
    lock = ("redis==8.1.0 \\\n    --hash=sha256:aa\n    # via streamrec (pyproject.toml)\n"
            "# WARNING: pip install will require the following package to be hashed.\n"
            "# Consider using a hashable URL like https://example.org/x.zip\n"
            "streamrec @ file:///home/someone/streamrec\n    # via streamrec (pyproject.toml)\n"
            "tqdm==4.70.1 \\\n    --hash=sha256:bb\n")
    out = lockfile.tidy(lock)
    assert "streamrec @" not in out and "/home/someone" not in out and "WARNING" not in out
    assert lockfile.pins(out) == {"redis": "8.1.0", "tqdm": "4.70.1"}


def test_differences_name_each_mismatch() -> None:
    locked = {"msgspec": "0.20.0", "redis": "8.1.0", "orjson": "3.13.0"}
    have = {"msgspec": "0.23.0", "redis": "8.1.0", "hiredis": "3.0.0"}
    assert lockfile.differences(locked, have) == [
        "msgspec==0.23.0 is installed, the lock names 0.20.0",
        "hiredis==3.0.0 is installed but not in the lock",
        "orjson==3.13.0 is in the lock but not installed",
    ]
    assert lockfile.differences(locked, locked) == []


def test_canonical_names_match_across_spellings() -> None:
    assert lockfile.canonical("Typing_Extensions") == lockfile.canonical("typing-extensions")
    assert lockfile.canonical("ruamel.yaml") == "ruamel-yaml"


def test_every_pip_install_in_the_images_goes_through_the_lock() -> None:
    lines = (ROOT / "deploy/Dockerfile").read_text().splitlines()
    text = "\n".join(ln for ln in lines if not ln.startswith("#")).replace("\\\n", " ")
    installs = re.findall(r"pip install[^&\n]*", text)
    assert installs
    for command in installs:
        assert "-c requirements.lock" in command or "--no-deps" in command, command
    copied = re.search(r"^COPY .*pyproject\.toml.*$", text, re.MULTILINE)
    assert copied and "requirements.lock" in copied[0]


def test_the_makefile_installs_the_venv_from_the_lock_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes --no-deps $(PIP_INDEX_ARGS) -r $(LOCK)" in makefile
    assert "lockfile.py check $(LOCK)" in makefile
