"""Helpers for the reliability tests: write a rekey config, run the CLI in a child process, read the checkpoint."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write `{"source": {...}, "target": {...}, "run": {...}}` as TOML."""
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@dataclass(frozen=True, slots=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def rekey_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine.launch", *args]


def child_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides or {})
    env.pop("AWS_CA_BUNDLE", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_rekey(*args: str, env: Mapping[str, str] | None = None, timeout: float = 240) -> CliResult:
    """Run `rekey ARGS` in a child process (the way a user does); returns exit code and output."""
    proc = subprocess.run(rekey_argv(*args), capture_output=True, text=True, timeout=timeout,
                          env=child_env(env), cwd=str(ROOT), check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def start_rekey(*args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(rekey_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(env), cwd=str(ROOT))


def checkpoint_query(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Read the checkpoint while (or after) a run writes it; a missing or locked file reads as empty."""
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return list(conn.execute(sql, params).fetchall())
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return []


def states(path: Path) -> dict[str, int]:
    return {str(s): int(n) for s, n in checkpoint_query(path, "SELECT state, COUNT(*) FROM objects GROUP BY state")}


def count_done(path: Path) -> int:
    return states(path).get("done", 0)


def open_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) or []
    return uploads


def secrets_absent(needles: Sequence[bytes], *, texts: Sequence[str] = (), files: Sequence[Path] = ()) -> list[str]:
    """Where any of `needles` (raw keys, their base64 and hex) appears; [] when nowhere."""
    import base64
    forms: list[bytes] = []
    for n in needles:
        forms += [n, base64.b64encode(n), n.hex().encode()]
    found: list[str] = []
    for i, text in enumerate(texts):
        data = text.encode()
        found += [f"text {i}" for f in forms if f in data]
    for path in files:
        for p in [path, *(Path(str(path) + s) for s in ("-wal", "-shm"))]:
            if p.exists():
                data = p.read_bytes()
                found += [str(p) for f in forms if f in data]
    return found
