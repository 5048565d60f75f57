"""Helpers for end-to-end CLI tests: write a TOML config, run `rekey` as a subprocess, read report and checkpoint."""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.sandbox import SandboxInfo
from tests.helpers import sse_c_params

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_text(sections: Mapping[str, Mapping[str, Any]]) -> str:
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items() if value is not None)
        lines.append("")
    return "\n".join(lines)


def write_config(directory: Path, sections: Mapping[str, Mapping[str, Any]], name: str = "rekey.toml") -> Path:
    path = directory / name
    path.write_text(toml_text(sections), encoding="utf-8")
    return path


def write_key_file(directory: Path, name: str, raw: bytes) -> Path:
    """A private (0600) key file holding the raw key bytes."""
    path = directory / name
    path.write_bytes(raw)
    path.chmod(0o600)
    return path


def source_section(info: SandboxInfo, bucket: str, *, https: bool = True, **extra: Any) -> dict[str, Any]:
    """`[source]` for the sandbox: HTTPS with the CA bundle unless `https=False`."""
    section: dict[str, Any] = {
        "bucket": bucket,
        "endpoint_url": info.s3_https if https else info.s3_http,
        "region": info.region,
    }
    if https:
        section["ca_bundle"] = info.ca_bundle
    section.update(extra)
    return section


def small_run_section(checkpoint: Path, **extra: Any) -> dict[str, Any]:
    """`[run]` with 5 MiB parts and threshold, so a 6+ MiB object is multipart."""
    return {"checkpoint": str(checkpoint), "concurrency": 8, "part_size": "5MiB",
            "multipart_threshold": "5MiB", **extra}


@dataclass(frozen=True, slots=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def describe(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def rekey_env(info: SandboxInfo, *, limited: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(info.env())
    if limited:
        env["AWS_ACCESS_KEY_ID"] = info.limited_access_key
        env["AWS_SECRET_ACCESS_KEY"] = info.limited_secret_key
    env["PYTHONPATH"] = str(REPO)
    return env


def run_rekey(info: SandboxInfo, *args: str, timeout: float = 180, limited: bool = False,
              cwd: Path | None = None) -> CliResult:
    """`python -m engine.launch ARGS` (what the `rekey` console script runs, its caches too) with the sandbox's
    credentials; never raises on a non-zero exit."""
    import time
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "engine.launch", *args], capture_output=True, text=True,
                          env=rekey_env(info, limited=limited), timeout=timeout, cwd=str(cwd or REPO),
                          check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def popen_rekey(info: SandboxInfo, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "engine.launch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=rekey_env(info), cwd=str(cwd or REPO))


def kill_when_held(proc: subprocess.Popen[bytes], proxy: Any, *, seconds: float, what: str) -> None:
    """SIGKILL a `rekey` process once the fault proxy has held one of its requests (a "stall" rule), while the
    request waits; fails if the process ends first or nothing is held within `seconds`."""
    deadline = time.monotonic() + seconds
    while proxy.statistics().injected.get("stall", 0) == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {what} reached the proxy"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def load_report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def report_by_key(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["key"]: o for o in report["objects"]}


def checkpoint_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Rows of a query on a checkpoint, read-only (safe while rekey writes to it)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute(sql, params))
    finally:
        conn.close()


def key_spellings(raw: bytes) -> dict[str, bytes]:
    """The ways a key could leak: raw bytes, base64 (with and without padding, URL-safe), hex."""
    b64 = base64.b64encode(raw)
    return {
        "raw": raw,
        "base64": b64,
        "base64-unpadded": b64.rstrip(b"="),
        "base64-urlsafe": base64.urlsafe_b64encode(raw).rstrip(b"="),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }


def head(s3: Any, bucket: str, key: str, sse_c_key: bytes | None = None) -> dict[str, Any]:
    params = sse_c_params(sse_c_key) if sse_c_key is not None else {}
    result: dict[str, Any] = s3.head_object(Bucket=bucket, Key=key, **params)
    return result


def tags_of(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def list_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def open_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return uploads


def sse_c_md5(raw: bytes) -> str:
    import hashlib
    return base64.b64encode(hashlib.md5(raw).digest()).decode("ascii")
