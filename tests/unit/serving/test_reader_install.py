"""The reader installs alone: ``pip install streamrec`` (no extra) is enough to read lists.

Reading recommendations must not need Faust, ONNX Runtime, FAISS or numpy: the
base dependencies are the reader's, and the worker's are the ``worker`` extra.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
READER = ("serving.reader", "serving.keys", "serving.redis_client", "serving")
WORKER_ONLY = ("faust", "aiokafka", "onnxruntime", "faiss", "numpy", "msgspec", "pydantic",
               "pydantic_settings", "typer", "tqdm", "threadpoolctl", "prometheus_client", "torch",
               "mode", "streams", "training", "streamrec")


def _name(requirement: str) -> str:
    for sep in "=<>[ ;":
        requirement = requirement.split(sep)[0]
    return requirement.replace("-", "_").lower()


def test_the_base_dependencies_are_the_readers() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {_name(d) for d in project["dependencies"]} == {"redis", "orjson"}
    third_party = set()
    for module in READER:
        path = ROOT / Path(*module.split("."))
        source = (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")
        for node in ast.walk(ast.parse(source.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and
                     not node.level else [])
            third_party |= {n.split(".")[0] for n in names}
    third_party -= set(sys.stdlib_module_names) | {"serving", "__future__"}
    assert third_party <= {"redis", "orjson"}, third_party


def test_the_reader_imports_and_parses_without_the_worker_packages() -> None:
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {WORKER_ONLY!r}:
            raise ImportError("not installed with the reader: " + name)
sys.meta_path.insert(0, Block())
from serving.reader import RecsReader, parse
r = parse("u1", {{"items": '["a"]', "scores": "[1.0]", "source": "model", "model_version": "v",
                  "generated_at": "1", "last_event_id": "e", "last_event_ts": "1", "seq": "1"}})
RecsReader.from_url("redis://127.0.0.1:1/0", "p:")
print(r.items)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['a']"
