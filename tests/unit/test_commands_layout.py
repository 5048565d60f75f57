"""Commands apart from the engine (issue 11 item 8): one module per subcommand, no import cycles, no privates."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from engine.cli import build_parser
from engine.commands import COMMAND_MODULES

ENGINE = Path(__file__).resolve().parents[2] / "engine"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every import in the file, also those inside functions."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def _engine_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ENGINE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for module, names in _imports(path):
            deps |= {d for d in (module, *(f"{module}.{n}" for n in names)) if d in modules and d != name}
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import path that leads back to where it started (depth-first, one witness per start)."""
    found: list[list[str]] = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph[path[-1]]):
            if nxt == path[0]:
                found.append([*path, nxt])
            elif nxt not in path and len(path) < 12:
                walk([*path, nxt])

    for start in sorted(graph):
        before = len(found)
        walk([start])
        del found[before + 1:]
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})[0] == ["a", "b", "c", "a"]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_engine() -> None:
    graph = _engine_graph()
    assert "engine.cli" in graph and "engine.commands.run" in graph
    assert _cycles(graph) == []


def test_every_subcommand_has_its_own_module() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = set(sub.choices)  # type: ignore[arg-type]
    assert names == {"run", "plan", "status", "verify", "cleanup", "audit", "policy", "bench", "demo", "sandbox"}
    assert set(COMMAND_MODULES) == names
    for name in names:
        assert (ENGINE / "commands" / f"{name}.py").is_file()
        no_config = name in ("sandbox", "demo", "audit", "bench")
        args = parser.parse_args([name] if no_config else [name, "-c", "x.toml"])
        assert args.handler.__module__ == f"engine.commands.{name}"


def test_no_command_imports_a_private_name_and_only_the_cli_imports_commands() -> None:
    private = []
    for path in sorted((ENGINE / "commands").glob("*.py")):
        for module, names in _imports(path):
            private += [f"{path.name}: {module}.{n}" for n in names if n.startswith("_") and n != "__future__"]
    assert private == []
    outside = []
    for path in sorted(ENGINE.glob("*.py")):
        if path.name in ("cli.py", "launch.py"):   # the command line, and the console script that starts it
            continue
        outside += [f"{path.name}: {m}" for m, _ in _imports(path) if m.startswith(("engine.cli", "engine.commands"))]
    assert outside == []


def test_verbose_anywhere_and_version(capsys: Any) -> None:
    import pytest
    parser = build_parser()
    assert parser.parse_args(["run", "-c", "x.toml", "-v"]).verbose is True
    assert parser.parse_args(["-v", "status", "-c", "x.toml"]).verbose is True
    assert parser.parse_args(["verify", "-c", "x.toml"]).verbose is False
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("rekey ") and out != "rekey unknown"


def _loaded_after(imports: str, *packages: str) -> list[str]:
    """Which of `packages` a fresh interpreter holds after running `imports` (the interpreter's start-up, not
    this test process's, whose modules are all loaded already)."""
    import subprocess
    import sys
    probe = (f"import sys\n{imports}\n"
             f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(packages)!r})))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=ENGINE.parent, timeout=60)
    return [p for p in out.stdout.strip().split(",") if p]


def test_status_starts_without_the_s3_stack() -> None:
    """`rekey status` on a large bucket's checkpoint must answer in well under a second (issue 12): its command
    start-up (parser, config, checkpoint, report) imports neither botocore, aiohttp nor cryptography."""
    imports = ("from engine.cli import build_parser\nbuild_parser()\n"
               "import engine.checkpoint, engine.commands.status, engine.config, engine.report")
    assert _loaded_after(imports, "botocore", "aiobotocore", "aiohttp", "cryptography", "ray") == []


def test_bench_default_modes_are_every_mode() -> None:
    from engine.benchcmd import MODES
    from engine.commands.bench import DEFAULT_MODES
    assert ",".join(m.value for m in MODES) == DEFAULT_MODES


def test_a_run_without_client_side_encryption_starts_without_cryptography() -> None:
    """Issue 15: cryptography is imported only when client-side encryption is configured (the run command's
    modules, the pipeline, the object core and the S3 boundary load without it)."""
    imports = ("import engine.commands.run, engine.pipeline, engine.report, engine.progress, engine.executor.local\n"
               "import workers.core.migrate, workers.core.strategies, workers.core.pending, workers.s3")
    assert _loaded_after(imports, "cryptography", "botocore") == ["botocore"]


def test_the_fast_transport_starts_without_aiobotocore_and_aiohttp() -> None:
    """Issue 15: a run's modules, the fast transport's client and a signed hot request load neither aiohttp
    nor aiobotocore's client machinery (0.3-0.4 s of a small run's start-up); the botocore transport's client
    brings them when a request needs it."""
    probe = ("import sys, anyio\n"
             "import engine.commands.run, engine.pipeline, engine.executor.local, workers.core.migrate\n"
             "from workers.s3 import Endpoint\n"
             "from workers.s3.fast import FastTransport\nfrom workers.s3.ops import Op\n"
             "from workers.s3.sdk_sync import fast_client\n"
             "fast = FastTransport(fast_client(Endpoint(endpoint_url='http://127.0.0.1:9', region='eu-west-1')), {})\n"
             "anyio.run(fast.prepare, Op.COPY_OBJECT, {'Bucket': 'b', 'Key': 'k', 'CopySource': {'Bucket': 'a', "
             "'Key': 'k'}, 'ServerSideEncryption': 'AES256'})\n"
             "print(sorted(m for m in sys.modules if m.startswith(('aiohttp', 'aiobotocore.', 'yarl'))))\n")
    import os
    import subprocess
    import sys
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_CONFIG_FILE": "/nonexistent",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=ENGINE.parent, timeout=60, env=env)
    assert out.stdout.strip() == "[]"
