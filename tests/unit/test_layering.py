"""The package boundaries the README promises, checked on the source tree.

* ``training/`` and ``streams/`` are siblings: neither imports the other.
* ``streamrec/`` (settings, events, session rules, Kafka) imports none of them
  at module level, except the top layer that drives them all: the CLI, the
  demo and the worker-process harness.
* Importing any ``training`` module loads neither ONNX Runtime nor FAISS;
  importing any ``streams``/``serving`` module never loads torch.
* No import cycles among the modules of ``streams/`` and ``serving/``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streamrec", "streams", "serving", "training")
TOP_LAYER = ("streamrec.cli", "streamrec.demo", "streamrec.harness")


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
    tree = ast.parse(source(module).read_text())
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


def _exists(module: str) -> bool:
    path = ROOT / Path(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@pytest.mark.parametrize(("package", "forbidden"), [("training", "streams"), ("streams", "training"),
                                                    ("serving", "training"), ("serving", "streams")])
def test_sibling_packages_do_not_import_each_other(package: str, forbidden: str) -> None:
    bad = {m: sorted(i for i in imports(m, top_level_only=False) if i.split(".")[0] == forbidden)
           for m in modules(package)}
    assert {m: i for m, i in bad.items() if i} == {}


def test_the_base_package_imports_no_layer_above_it_at_module_level() -> None:
    bad = {m: sorted(i for i in imports(m, top_level_only=True)
                     if i.split(".")[0] in ("streams", "serving", "training"))
           for m in modules("streamrec") if not m.startswith(TOP_LAYER)}
    assert {m: i for m, i in bad.items() if i} == {}


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


def test_streams_and_serving_have_no_import_cycles() -> None:
    mods = modules("streams") + modules("serving")
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
