"""Two layers, one direction: no module under workers/ imports the engine (STYLE.md, convention 1)."""

from __future__ import annotations

import ast
from pathlib import Path

WORKERS = Path(__file__).resolve().parents[2] / "workers"
DYNAMIC_IMPORTERS = {"import_module", "__import__"}


def engine_imports(source: str, filename: str = "<string>") -> list[str]:
    """`line: module` for every import of `engine` (static, or dynamic with a literal name) in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in DYNAMIC_IMPORTERS and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
        found += [f"{node.lineno}: {name}" for name in names if name == "engine" or name.startswith("engine.")]
    return found


def test_the_checker_sees_every_form_of_import() -> None:
    source = "\n".join([
        "import engine",
        "import os, engine.pipeline as p",
        "from engine.checkpoint import Checkpoint",
        "from engine import cli",
        "import importlib; importlib.import_module('engine.report')",
        "def f():\n    from engine.journal import AsyncCheckpoint",
        "from workers.model import Mode",
        "from . import sse",
        "import enginex",
    ])
    assert engine_imports(source) == ["1: engine", "2: engine.pipeline", "3: engine.checkpoint", "4: engine",
                                      "5: engine.report", "7: engine.journal"]


def test_workers_never_import_the_engine() -> None:
    modules = sorted(WORKERS.rglob("*.py"))
    assert len(modules) >= 10, f"expected the workers package under {WORKERS}"
    violations = [f"{path.relative_to(WORKERS.parent)}:{hit}"
                  for path in modules for hit in engine_imports(path.read_text(encoding="utf-8"), str(path))]
    assert not violations, "workers/ must not import engine/:\n" + "\n".join(violations)
