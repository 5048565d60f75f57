"""A run SIGKILLed part-way, then run again: every object ends re-encrypted with its original bytes, nothing left over.

300 small objects and 4 multipart ones (12-20 MiB, 5 MiB parts), plaintext, SSE-S3 and SSE-C sources, migrated in
place to SSE-KMS. The first run is killed while a multipart upload has finished parts (or, failing that, once half
the objects are done); the second run, same config and checkpoint, must finish the job.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.sandbox import SandboxInfo
from tests.cli_helpers import (
    MiB,
    checkpoint_rows,
    load_report,
    open_uploads,
    popen_rekey,
    run_rekey,
    small_run_section,
    source_section,
    write_config,
    write_key_file,
)
from tests.helpers import read_back, sse_c_params

SMALL = 300
BIG = {100: ("none", 12 * MiB + 5), 101: ("sse-s3", 14 * MiB), 102: ("sse-c", 16 * MiB + 1), 103: ("sse-c", 20 * MiB)}
MODES = ("none", "sse-s3", "sse-c")


@dataclass(frozen=True)
class Seeded:
    key: str
    mode: str
    size: int
    sha256: str = field(repr=False)


def seed_one(s3: Any, bucket: str, key: str, mode: str, body: bytes, sse_c_key: bytes) -> Seeded:
    params: dict[str, Any] = {}
    if mode == "sse-s3":
        params = {"ServerSideEncryption": "AES256"}
    elif mode == "sse-c":
        params = sse_c_params(sse_c_key)
    s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"n": key}, **params)
    return Seeded(key, mode, len(body), hashlib.sha256(body).hexdigest())


def seed(s3: Any, bucket: str, sse_c_key: bytes) -> list[Seeded]:
    jobs = [(f"obj-{i:04d}", MODES[i % 3], os.urandom(i * 13 % 4000)) for i in range(SMALL)]
    # The multipart objects sit about a third of the way through the listing: in flight when the kill comes.
    jobs += [(f"obj-{i:04d}-big", mode, os.urandom(size)) for i, (mode, size) in BIG.items()]
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda j: seed_one(s3, bucket, j[0], j[1], j[2], sse_c_key), jobs))


def progress(checkpoint: Path) -> tuple[int, int, int]:
    """(objects done, multipart uploads open, parts finished in them) as the checkpoint says right now."""
    if not checkpoint.exists():
        return 0, 0, 0
    try:
        done = checkpoint_rows(checkpoint, "SELECT count(*) FROM objects WHERE state = 'done'")[0][0]
        uploads = checkpoint_rows(checkpoint, "SELECT count(*) FROM uploads")[0][0]
        parts = checkpoint_rows(checkpoint, "SELECT count(*) FROM parts JOIN uploads USING (upload_id)")[0][0]
    except sqlite3.Error:  # created but the schema is not there yet
        return 0, 0, 0
    return int(done), int(uploads), int(parts)


def kill_part_way(proc: subprocess.Popen[bytes], checkpoint: Path, total: int) -> tuple[int, int, int]:
    """SIGKILL the run once a multipart upload has finished parts, or once half the objects are done."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the first run ended (exit {proc.returncode}) before it could be killed:\n"
                                 f"{out.decode()}\n{err.decode()}")
        state = progress(checkpoint)
        done, _uploads, parts = state
        if (parts and done >= 0.25 * total) or done >= 0.5 * total:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return state
        time.sleep(0.01)
    proc.kill()
    proc.communicate()
    raise AssertionError("the first run made no visible progress in 120 s")


def test_sigkilled_run_resumes_to_completion(sandbox: SandboxInfo, s3: Any, bucket: str, kms_key: str,
                                             tmp_path: Path) -> None:
    sse_c_key = os.urandom(32)
    seeded = seed(s3, bucket, sse_c_key)
    total = len(seeded)
    checkpoint = tmp_path / "cp.sqlite"
    config = write_config(tmp_path, {
        "source": source_section(sandbox, bucket, sse_c_key_file=str(write_key_file(tmp_path, "c.key", sse_c_key))),
        "target": {"mode": "sse-kms", "kms_key_id": kms_key},
        "run": small_run_section(checkpoint, concurrency=6),
    })

    proc = popen_rekey(sandbox, "run", "-q", "-c", str(config))
    done_at_kill, uploads_at_kill, parts_at_kill = kill_part_way(proc, checkpoint, total)
    assert proc.returncode == -signal.SIGKILL
    assert done_at_kill < total, "the kill came too late to test anything"
    print(f"killed with {done_at_kill}/{total} done, {uploads_at_kill} uploads open, {parts_at_kill} parts")
    journaled = {r["upload_id"]: r["key"] for r in checkpoint_rows(checkpoint, "SELECT key, upload_id FROM uploads")}
    on_server_after_kill = {u["UploadId"]: u["Key"] for u in open_uploads(s3, bucket)}

    result = run_rekey(sandbox, "run", "-q", "-c", str(config), "--report", str(tmp_path / "report.json"))
    assert result.returncode == 0, result.describe()
    report = load_report(tmp_path / "report.json")
    assert sorted(o["key"] for o in report["objects"]) == sorted(o.key for o in seeded)
    # An object the killed run rewrote but had not yet recorded is found already re-encrypted: skipped, and
    # only then. Every object, done or skipped, carries the source mode it really had (recorded before the
    # write replaced it), never the target's.
    by_key = {o.key: o for o in seeded}
    unexpected = [o for o in report["objects"]
                  if (o["state"], o["action"], o["source_mode"]) != ("done", o["action"], by_key[o["key"]].mode)
                  and (o["state"], o["action"], o["source_mode"]) != ("skipped", "skip", by_key[o["key"]].mode)]
    assert not unexpected, unexpected[:10]
    skipped = report["summary"]["by_state"].get("skipped", 0)
    assert skipped <= total - done_at_kill, report["summary"]

    def check(obj: Seeded) -> str | None:
        h = s3.head_object(Bucket=bucket, Key=obj.key)
        if h.get("ServerSideEncryption") != "aws:kms" or not str(h.get("SSEKMSKeyId")).endswith("/" + kms_key):
            return f"{obj.key}: {h.get('ServerSideEncryption')} {h.get('SSEKMSKeyId')}"
        if h.get("Metadata") != {"n": obj.key}:
            return f"{obj.key}: metadata {h.get('Metadata')}"
        body = read_back(s3, bucket, obj.key)
        if hashlib.sha256(body).hexdigest() != obj.sha256:
            return f"{obj.key}: {len(body)} bytes differ from the {obj.size} seeded"
        return None

    with ThreadPoolExecutor(8) as pool:
        problems = [p for p in pool.map(check, seeded) if p]
    assert not problems, "\n".join(problems[:20])
    left = {u["UploadId"]: u["Key"] for u in open_uploads(s3, bucket)}
    assert not left, (f"multipart uploads left behind: {left}; open on the server after the kill: "
                      f"{on_server_after_kill}; recorded in the checkpoint at the kill: {journaled}")
    status = run_rekey(sandbox, "status", "-c", str(config), "--json")
    assert status.returncode == 0, status.describe()
    stale = [dict(r) for r in checkpoint_rows(
        checkpoint, "SELECT u.key, u.upload_id, u.kind, o.state, o.action FROM uploads u JOIN objects o USING (key)")]
    assert json.loads(status.stdout)["open_uploads"] == 0, f"`rekey status` reports uploads that are not open: {stale}"
    assert len(s3.list_objects_v2(Bucket=bucket)["Contents"]) == total, "objects added or lost"
