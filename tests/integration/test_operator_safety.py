"""Issue 13 on SeaweedFS: one run per checkpoint, SIGTERM/SIGINT stop gently, private files, honest messages."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine.sandbox import SandboxInfo
from tests.cli_helpers import (
    CliResult,
    checkpoint_rows,
    load_report,
    popen_rekey,
    run_rekey,
    source_section,
    write_config,
)

OBJECTS = 60


def seed_small(s3: Any, bucket: str, n: int = OBJECTS) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"o/{i:03d}", Body=os.urandom(100 + i)),
                      range(n)))


def slow_config(tmp_path: Path, sandbox: SandboxInfo, bucket: str, kms_key: str, name: str = "rekey.toml") -> Path:
    """About 20 requests a second, 2 at a time: a run of OBJECTS objects lasts several seconds."""
    return write_config(tmp_path, {
        "source": source_section(sandbox, bucket),
        "target": {"mode": "sse-kms", "kms_key_id": kms_key},
        "run": {"checkpoint": str(tmp_path / "cp" / "rekey.sqlite"), "concurrency": 2,
                "max_requests_per_second": 20},
    }, name)


def done_count(checkpoint: Path) -> int:
    if not checkpoint.exists():
        return 0
    try:
        return int(checkpoint_rows(checkpoint, "SELECT COUNT(*) FROM objects WHERE state = 'done'")[0][0])
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def wait_until_done(checkpoint: Path, n: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while done_count(checkpoint) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.1)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def finish(proc: subprocess.Popen[bytes]) -> CliResult:
    out, err = proc.communicate(timeout=120)
    return CliResult(proc.returncode, out.decode(), err.decode(), 0.0)


def test_one_run_per_checkpoint_and_gentle_stops(sandbox: SandboxInfo, s3: Any, bucket: str, kms_key: str,
                                                 tmp_path: Path) -> None:
    seed_small(s3, bucket)
    config = slow_config(tmp_path, sandbox, bucket, kms_key)
    checkpoint = tmp_path / "cp" / "rekey.sqlite"
    report = tmp_path / "reports" / "first.json"
    first = popen_rekey(sandbox, "run", "-c", str(config), "--report", str(report))
    wait_until_done(checkpoint, 3, first)

    # Every file of the checkpoint is private while the run writes it.
    for suffix in ("", "-wal", "-shm", ".lock"):
        path = checkpoint.with_name(checkpoint.name + suffix)
        assert mode_of(path) == 0o600, (path, oct(mode_of(path)))

    # A second run on the same checkpoint is refused, naming the process that holds it.
    second = run_rekey(sandbox, "run", "-q", "-c", str(config))
    assert second.returncode == 3, second.describe()
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid@host {first.pid}@{socket.gethostname()}" in lines[0], second.describe()

    # status reads without the lock, while the run goes on.
    status = run_rekey(sandbox, "status", "--json", "-c", str(config))
    assert status.returncode == 0, status.describe()
    assert json.loads(status.stdout)["summary"]["by_state"].get("done", 0) >= 3

    # SIGTERM: in-flight objects settle, summary and report are written, exit 143.
    first.send_signal(signal.SIGTERM)
    stopped = finish(first)
    assert stopped.returncode == 143, stopped.describe()
    assert stopped.stderr.strip().splitlines()[-1] == (
        "rekey: stopped by SIGTERM; the checkpoint is consistent: run the same command again to resume")
    assert "Traceback" not in stopped.stderr
    assert "objects: " in stopped.stdout and "pending" in stopped.stdout, stopped.describe()  # the summary
    data = load_report(report)
    assert data["run"]["exit_code"] == 1  # objects left: they are pending, not failed
    states = data["summary"]["by_state"]
    assert states.get("done", 0) >= 3 and "failed" not in states and "in_progress" not in states, states
    assert mode_of(report) == 0o600

    # SIGINT: the same, exit 130.
    again = popen_rekey(sandbox, "run", "-c", str(config), "--report", str(tmp_path / "reports" / "second.json"))
    before = done_count(checkpoint)
    wait_until_done(checkpoint, before + 2, again)
    again.send_signal(signal.SIGINT)
    interrupted = finish(again)
    assert interrupted.returncode == 130, interrupted.describe()
    assert "stopped by SIGINT" in interrupted.stderr.strip().splitlines()[-1]
    assert load_report(tmp_path / "reports" / "second.json")["summary"]["by_state"].get("in_progress", 0) == 0

    # A run killed outright leaves its lock file, but not its lock: the next run finishes the job.
    killed = popen_rekey(sandbox, "run", "-q", "-c", str(config))
    wait_until_done(checkpoint, done_count(checkpoint) + 1, killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert checkpoint.with_name("rekey.sqlite.lock").exists()
    last = run_rekey(sandbox, "run", "-q", "-c", str(config), "--report", str(report))
    assert last.returncode == 0, last.describe()
    states = load_report(report)["summary"]["by_state"]
    # skipped: copied by the killed run before its checkpoint recorded it, found already right
    assert set(states) <= {"done", "skipped"} and sum(states.values()) == OBJECTS, states
    for path in (checkpoint, report, checkpoint.with_name("rekey.sqlite.lock")):
        assert mode_of(path) == 0o600, (path, oct(mode_of(path)))
