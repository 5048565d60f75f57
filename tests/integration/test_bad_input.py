"""Bad input is refused with an exact message, racing writers are never clobbered, and no key leaks anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.sandbox import SandboxInfo
from tests.faultproxy import FaultProxy, Rule
from tests.integration.reliability_helpers import (
    checkpoint_query,
    child_env,
    rekey_argv,
    run_rekey,
    secrets_absent,
    start_rekey,
    states,
    write_config,
)


def sse_c_config(tmp_path: Path, sandbox: SandboxInfo, bucket: str, key_file: Path) -> Path:
    return write_config(tmp_path / "rekey.toml", {
        "source": {"bucket": bucket, "endpoint_url": sandbox.s3_https, "ca_bundle": sandbox.ca_bundle},
        "target": {"mode": "sse-c", "sse_c_key_file": str(key_file)},
        "run": {"checkpoint": str(tmp_path / "rekey.sqlite")},
    })


def plain_config(tmp_path: Path, bucket: str, endpoint: str, mode: str = "sse-s3", **target: Any) -> Path:
    return write_config(tmp_path / "rekey.toml", {
        "source": {"bucket": bucket, "endpoint_url": endpoint},
        "target": {"mode": mode, **target},
        "run": {"checkpoint": str(tmp_path / "rekey.sqlite"), "concurrency": 4},
    })


def test_empty_key_file_is_refused(sandbox: SandboxInfo, bucket: str, tmp_path: Path) -> None:
    key = tmp_path / "empty.key"
    key.write_bytes(b"\n")
    key.chmod(0o600)
    result = run_rekey("run", "-c", str(sse_c_config(tmp_path, sandbox, bucket, key)))
    assert result.code == 2
    assert result.stderr == f"rekey: error: target.sse_c_key_file: {key}: key file is empty\n"


def test_unreadable_key_file_is_refused(sandbox: SandboxInfo, bucket: str, tmp_path: Path) -> None:
    # root reads a mode-000 file anyway, so as root the CLI runs as an unprivileged user (setpriv).
    shared = Path(tempfile.mkdtemp(prefix="rekey-unreadable-"))
    try:
        shared.chmod(0o755)
        key = shared / "locked.key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o000)
        config = write_config(shared / "rekey.toml", {  # no CA bundle: the unprivileged user reads nothing else
            "source": {"bucket": bucket, "endpoint_url": sandbox.s3_https},
            "target": {"mode": "sse-c", "sse_c_key_file": str(key)},
            "run": {"checkpoint": str(shared / "rekey.sqlite")},
        })
        config.chmod(0o644)
        args = ["run", "-c", str(config)]
        if os.geteuid() == 0:
            proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *rekey_argv(*args)],
                                  capture_output=True, text=True, timeout=120, env=child_env(None), cwd="/")
            code, stderr = proc.returncode, proc.stderr
        else:
            result = run_rekey(*args)
            code, stderr = result.code, result.stderr
        assert code == 2, stderr
        assert stderr == f"rekey: error: target.sse_c_key_file: {key}: key file is not readable (permission denied)\n"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_missing_key_file_is_refused(sandbox: SandboxInfo, bucket: str, tmp_path: Path) -> None:
    key = tmp_path / "nowhere.key"
    result = run_rekey("run", "-c", str(sse_c_config(tmp_path, sandbox, bucket, key)))
    assert result.code == 2
    assert result.stderr == f"rekey: error: target.sse_c_key_file: {key}: key file does not exist\n"


def test_key_file_readable_by_others_warns_and_runs_without_leaking_the_key(
        s3_http: Any, sandbox: SandboxInfo, bucket: str, tmp_path: Path) -> None:
    raw = os.urandom(32)
    key = tmp_path / "shared.key"
    key.write_bytes(raw)
    key.chmod(0o644)
    s3_http.put_object(Bucket=bucket, Key="a.txt", Body=b"hello")
    report = tmp_path / "report.json"
    result = run_rekey("run", "-c", str(sse_c_config(tmp_path, sandbox, bucket, key)), "--report", str(report))
    assert result.stderr.startswith(
        f"rekey: warning: key file {key} is readable by other users (chmod 600 it)\n")
    assert result.code == 0, result.stdout + result.stderr
    assert states(tmp_path / "rekey.sqlite") == {"done": 1}
    assert secrets_absent([raw], texts=[result.stdout, result.stderr, report.read_text()],
                          files=[tmp_path / "rekey.sqlite"]) == []


def test_checkpoint_from_another_config_is_refused(s3_http: Any, sandbox: SandboxInfo, bucket: str,
                                                   kms_key: str, tmp_path: Path) -> None:
    s3_http.put_object(Bucket=bucket, Key="a.txt", Body=b"hello")
    assert run_rekey("run", "-c", str(plain_config(tmp_path, bucket, sandbox.s3_http)), "-q").code == 0
    other = plain_config(tmp_path, bucket, sandbox.s3_http, "sse-kms", kms_key_id=kms_key)
    result = run_rekey("run", "-c", str(other), "-q")
    assert result.code == 3
    assert result.stderr == (
        f"rekey: error: {tmp_path / 'rekey.sqlite'}: checkpoint was written for another configuration "
        f"({bucket}/ -> sse-s3: target.kms_key_id differs (null then, \"{kms_key}\" now); target.mode differs "
        f"(\"sse-s3\" then, \"sse-kms\" now)); use the original config, or another [run] checkpoint path to start "
        "afresh\n")


def test_corrupt_checkpoint_is_refused(sandbox: SandboxInfo, bucket: str, tmp_path: Path) -> None:
    checkpoint = tmp_path / "rekey.sqlite"
    checkpoint.write_bytes(b"this is not a database" * 100)
    result = run_rekey("run", "-c", str(plain_config(tmp_path, bucket, sandbox.s3_http)), "-q")
    assert result.code == 3
    assert result.stderr == (f"rekey: error: {checkpoint}: checkpoint is unusable (file is not a database); "
                             "move it aside to start afresh\n")


def test_bucket_without_write_permission(s3_http: Any, sandbox: SandboxInfo, bucket: str, tmp_path: Path) -> None:
    for i in range(3):
        s3_http.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x" * 10)
    config = plain_config(tmp_path, bucket, sandbox.s3_http)
    env = {"AWS_ACCESS_KEY_ID": sandbox.limited_access_key, "AWS_SECRET_ACCESS_KEY": sandbox.limited_secret_key}
    result = run_rekey("run", "-c", str(config), "-q", env=env)
    print(f"\nlimited identity: exit {result.code}\n{result.stdout}{result.stderr}")
    # Per object, not fatal: object-level policies can deny some keys and allow others, so AccessDenied on
    # a copy fails that object (recorded, retried next run); the run stops only when the bucket itself is
    # not accessible (HeadBucket) or the credentials are refused.
    assert result.code == 1
    rows = checkpoint_query(tmp_path / "rekey.sqlite", "SELECT state, last_error FROM objects ORDER BY key")
    assert [r[0] for r in rows] == ["failed"] * 3
    assert all(f"copy_object s3://{bucket}/k" in r[1] and "access denied: AccessDenied" in r[1] for r in rows)
    assert s3_http.head_object(Bucket=bucket, Key="k0").get("ServerSideEncryption") is None


@pytest.fixture
def proxy(sandbox: SandboxInfo) -> Iterator[FaultProxy]:
    with FaultProxy(sandbox.s3_http, []) as p:
        yield p


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_object_deleted_between_listing_and_copy_is_recorded_as_deleted(
        s3_http: Any, bucket: str, proxy: FaultProxy, tmp_path: Path) -> None:
    for key in ("a", "victim", "z"):
        s3_http.put_object(Bucket=bucket, Key=key, Body=key.encode() * 100)
    # The HeadObject that follows the listing is held until the test has deleted the object.
    proxy.set_rules([Rule("delay", seconds=1.5, methods=frozenset({"HEAD"}), path_regex=f"^/{bucket}/victim$")])
    config = plain_config(tmp_path, bucket, proxy.url)
    child = start_rekey("run", "-c", str(config), "--report", str(tmp_path / "r.json"), "-q")
    wait_for(lambda: proxy.statistics().injected["delay"] == 1)
    s3_http.delete_object(Bucket=bucket, Key="victim")
    out, err = child.communicate(timeout=60)
    # Nothing is left to re-encrypt: recorded with the reason, not done, and not retried forever.
    assert child.returncode == 0, out + err
    row = checkpoint_query(tmp_path / "rekey.sqlite", "SELECT state, last_error FROM objects WHERE key='victim'")
    assert row == [("skipped", f"head_object s3://{bucket}/victim: deleted since it was listed")]
    assert states(tmp_path / "rekey.sqlite") == {"done": 2, "skipped": 1}

    proxy.set_rules([])
    again = run_rekey("run", "-c", str(config), "-q")
    print(f"\nafter a deletion, the next run: exit {again.code}: {states(tmp_path / 'rekey.sqlite')}")
    assert states(tmp_path / "rekey.sqlite").get("done") == 2


def test_object_overwritten_between_head_and_copy_is_not_clobbered(
        s3_http: Any, bucket: str, proxy: FaultProxy, tmp_path: Path) -> None:
    s3_http.put_object(Bucket=bucket, Key="doc", Body=b"version one")
    # Hold rekey's CopyObject (a PUT on the key itself, in place) while someone else writes a new version.
    proxy.set_rules([Rule("delay", seconds=1.5, methods=frozenset({"PUT"}), path_regex=f"^/{bucket}/doc$")])
    config = plain_config(tmp_path, bucket, proxy.url)
    child = start_rekey("run", "-c", str(config), "-q")
    wait_for(lambda: proxy.statistics().injected["delay"] == 1)
    s3_http.put_object(Bucket=bucket, Key="doc", Body=b"version two, written by someone else")
    out, err = child.communicate(timeout=60)

    assert child.returncode == 1, out + err
    row = checkpoint_query(tmp_path / "rekey.sqlite", "SELECT state, last_error FROM objects WHERE key='doc'")
    assert row == [("changed", f"copy_object s3://{bucket}/doc: object changed since it was planned "
                               "(ETag mismatch)")]
    assert s3_http.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"version two, written by someone else"

    proxy.set_rules([])
    report = tmp_path / "again.json"
    again = run_rekey("run", "-c", str(config), "-q", "--report", str(report))
    assert again.code == 0, again.stdout + again.stderr
    got = s3_http.get_object(Bucket=bucket, Key="doc")
    assert got["Body"].read() == b"version two, written by someone else"
    assert got["ServerSideEncryption"] == "AES256"
    assert [o["state"] for o in json.loads(report.read_text())["objects"]] == ["done"]
