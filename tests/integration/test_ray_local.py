"""`[run] executor = "ray"` without `[ray] address`: the run starts a Ray of its own on this machine and stops it.

Apart from test_ray_executor.py so that it runs after that module's 3-node cluster is shut down: two Rays on 2
shared cores make this one's start-up several times slower."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.sandbox import SandboxInfo
from tests.cli_helpers import load_report, run_rekey, small_run_section, source_section, write_config


def test_without_an_address_the_run_starts_its_own_local_ray(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                              tmp_path: Path) -> None:
    bodies = {f"l/{i}": os.urandom(100 + i) for i in range(8)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    config = write_config(tmp_path, {"source": source_section(sandbox, bucket), "target": {"mode": "sse-s3"},
                                     "run": small_run_section(tmp_path / "cp.sqlite", executor="ray"),
                                     "ray": {"actors": 1}})
    report = tmp_path / "r.json"
    done = run_rekey(sandbox, "run", "-q", "-c", str(config), "--report", str(report), timeout=300)
    assert done.returncode == 0, done.describe()
    rep = load_report(report)
    assert rep["executor"] == {"kind": "ray", "actors": 1, "actors_lost": 0}
    assert {o["actor"].split("@")[0] for o in rep["objects"]} == {"actor-0"}
    for key, body in bodies.items():
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == body and got["ServerSideEncryption"] == "AES256"
