"""The floors of the code, checked on the source tree.

Three floors, each importing only from its own floor or the ones below, by any
import: at module level or inside a function (a function-local import is no
way around the rule):

====  ===================================  ==========================================
0     ``streamrec/``                       settings, errors, events, session rules, Kafka
1     ``streams/``, ``serving/``,          the parts: when, what is computed and stored,
      ``training/``                        what is learned
2     ``cli/``, ``bench/``                 the top: the command line, the demo, the
                                           worker-process harness, the benchmarks
====  ===================================  ==========================================

Within floor 1, ``training/`` and ``streams/`` are siblings (neither imports the
other) and ``serving/`` imports neither. Importing any ``training`` module loads
neither ONNX Runtime nor FAISS; importing any ``streams``/``serving`` module never
loads torch. No import cycles among the modules of ``streams/`` and ``serving/``, nor of
``training/``; every error class is in ``streamrec/errors.py``, under ``StreamrecError``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOORS = {"streamrec": 0, "streams": 1, "serving": 1, "training": 1, "cli": 2, "bench": 2}
PACKAGES = tuple(FLOORS)


def modules(package: str) -> list[str]:
    out = []
    for p in (ROOT / package).rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(out)


def source(module: str) -> Path:
    path = ROOT / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports(module: str, *, top_level_only: bool) -> set[str]:
    """Project modules ``module`` imports (at module level only, or anywhere)."""
    return imports_in(source(module).read_text(), top_level_only=top_level_only)


def imports_in(text: str, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(text)
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.If) and top_level_only:  # `if TYPE_CHECKING:` blocks are not run
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] in PACKAGES and _exists(m)}


def upward(package: str, text: str) -> list[str]:
    """The imports in ``text`` (a module of ``package``) from a floor above ``package``'s."""
    return sorted(i for i in imports_in(text, top_level_only=False)
                  if FLOORS[i.split(".")[0]] > FLOORS[package])


def _exists(module: str) -> bool:
    path = ROOT / Path(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@pytest.mark.parametrize(("package", "forbidden"), [("training", "streams"), ("streams", "training"),
                                                    ("serving", "training"), ("serving", "streams")])
def test_sibling_packages_do_not_import_each_other(package: str, forbidden: str) -> None:
    bad = {m: sorted(i for i in imports(m, top_level_only=False) if i.split(".")[0] == forbidden)
           for m in modules(package)}
    assert {m: i for m, i in bad.items() if i} == {}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_from_a_floor_above_its_own(package: str) -> None:
    bad = {m: upward(package, source(m).read_text()) for m in modules(package)}
    assert {m: i for m, i in bad.items() if i} == {}


def test_every_package_has_a_floor() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert on_disk == set(FLOORS)


def test_a_function_local_import_from_a_floor_above_is_caught() -> None:
    hidden = "def f():\n    from cli.harness import WorkerProcess\n    return WorkerProcess\n"
    assert upward("streamrec", hidden) == ["cli.harness"]
    assert upward("serving", "def f():\n    import streamrec.events\n") == []
    assert upward("streams", "def f():\n    from training.pipeline import train_and_export\n") == []


def _loaded_after_import(mods: list[str], heavy: tuple[str, ...]) -> dict[str, list[str]]:
    code = ("import importlib, sys, json\nout = {}\n"
            f"for m in {mods!r}:\n"
            "    importlib.import_module(m)\n"
            f"    out[m] = [h for h in {heavy!r} if h in sys.modules]\n"
            "print(json.dumps(out))")
    # one fresh interpreter per package: what a module pulls in is what it imports
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    import json

    return {m: h for m, h in json.loads(res.stdout).items() if h}


def test_training_never_imports_onnxruntime_or_faiss() -> None:
    assert _loaded_after_import(modules("training"), ("onnxruntime", "faiss")) == {}


def test_the_worker_never_imports_torch() -> None:
    assert _loaded_after_import(modules("streams") + modules("serving"), ("torch",)) == {}


@pytest.mark.parametrize("packages", [("streams", "serving"), ("training",)])
def test_no_import_cycles(packages: tuple[str, ...]) -> None:
    mods = [m for p in packages for m in modules(p)]
    graph = {m: {i for i in imports(m, top_level_only=False) if i in mods} for m in mods}
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        for n in graph[m]:
            if n in path:
                cycles.append(path[path.index(n):] + [n])
            elif n not in done:
                visit(n, path + [n])
        done.add(m)

    done: set[str] = set()
    for m in mods:
        if m not in done:
            visit(m, [m])
    assert cycles == []


def test_every_error_class_is_in_the_one_error_tree() -> None:
    """Exceptions are defined in streamrec/errors.py only, all under StreamrecError."""
    elsewhere = {}
    for package in PACKAGES:
        for m in modules(package):
            for node in ast.walk(ast.parse(source(m).read_text())):
                if isinstance(node, ast.ClassDef) and any(
                        isinstance(b, ast.Name) and b.id.endswith(("Error", "Exception"))
                        for b in node.bases) and m != "streamrec.errors":
                    elsewhere[f"{m}.{node.name}"] = [ast.unparse(b) for b in node.bases]
    assert elsewhere == {}
    from streamrec import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert all(issubclass(c, errors.StreamrecError) for c in classes)
