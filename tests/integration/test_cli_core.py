"""The `rekey` command end to end: a second run writes nothing, `plan` and `status`, bad input, no key material."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from engine.sandbox import SandboxInfo
from tests.cli_helpers import (
    CliResult,
    MiB,
    head,
    key_spellings,
    list_keys,
    load_report,
    open_uploads,
    report_by_key,
    run_rekey,
    small_run_section,
    source_section,
    write_config,
    write_key_file,
)
from tests.helpers import read_back, sse_c_params


def snapshot(s3: Any, bucket: str, sse_c: dict[str, bytes] | None = None) -> dict[str, tuple[Any, ...]]:
    """What a write to any object would change: ETag, LastModified, size and encryption, per key."""
    sse_c = sse_c or {}
    out = {}
    for key in list_keys(s3, bucket):
        h = head(s3, bucket, key, sse_c.get(key))
        out[key] = (h["ETag"], h["LastModified"], h["ContentLength"], h.get("ServerSideEncryption"),
                    h.get("SSEKMSKeyId"), h.get("SSECustomerKeyMD5"))
    return out


def one_line_error(result: CliResult) -> str:
    """The single `rekey: error: ...` line a failed command prints (and nothing on stdout)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line\n{result.describe()}"
    assert lines[0].startswith("rekey: error: "), result.describe()
    assert result.stdout == "", result.describe()
    return lines[0].removeprefix("rekey: error: ")


# --- a finished bucket, status, plan ------------------------------------------------------------------------


def test_second_run_over_a_finished_bucket_writes_nothing(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                          kms_key: str, tmp_path: Path) -> None:
    sse_c_key = os.urandom(32)
    key_file = write_key_file(tmp_path, "src.key", sse_c_key)
    s3.put_object(Bucket=bucket, Key="a/plain.txt", Body=b"plain", ContentType="text/plain")
    s3.put_object(Bucket=bucket, Key="a/s3.txt", Body=b"sse-s3", ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="b/customer.bin", Body=b"sse-c" * 100, **sse_c_params(sse_c_key))
    s3.put_object(Bucket=bucket, Key="b/large.bin", Body=os.urandom(6 * MiB), Metadata={"k": "v"})
    sections = {
        "source": source_section(sandbox, bucket, sse_c_key_file=str(key_file)),
        "target": {"mode": "sse-kms", "kms_key_id": kms_key},
        "run": small_run_section(tmp_path / "first.sqlite"),
    }
    first = run_rekey(sandbox, "run", "-q", "-c", str(write_config(tmp_path, sections, "first.toml")))
    assert first.returncode == 0, first.describe()

    # `rekey status` reads the checkpoint of that run.
    status = run_rekey(sandbox, "status", "-c", str(tmp_path / "first.toml"), "--json")
    assert status.returncode == 0, status.describe()
    st = json.loads(status.stdout)
    assert st["summary"]["by_state"] == {"done": 4}
    assert st["listing"]["complete"] is True and st["open_uploads"] == 0 and st["runs"] == 1
    text = run_rekey(sandbox, "status", "-c", str(tmp_path / "first.toml"))
    assert text.returncode == 0 and "objects: 4 (done 4)" in text.stdout and "listing: complete" in text.stdout, \
        text.describe()

    before = snapshot(s3, bucket)
    time.sleep(1.1)  # LastModified has one-second resolution: a rewrite during the next run would show
    for name, limited in (("second", False), ("read-only", True)):
        sections["run"] = small_run_section(tmp_path / f"{name}.sqlite")  # a FRESH checkpoint: nothing remembered
        config = write_config(tmp_path, sections, f"{name}.toml")
        result = run_rekey(sandbox, "run", "-q", "-c", str(config), "--report", str(tmp_path / f"{name}.json"),
                           limited=limited)
        # The read-only identity (Read and List only) could not write even if rekey tried.
        assert result.returncode == 0, f"{name} run\n{result.describe()}"
        report = load_report(tmp_path / f"{name}.json")
        assert {(o["key"], o["action"], o["state"]) for o in report["objects"]} == {
            (k, "skip", "skipped") for k in before}, name
        assert report["summary"]["bytes_copied"] == report["summary"]["bytes_through_client"] == 0
        assert snapshot(s3, bucket) == before, f"the {name} run rewrote objects"
    assert open_uploads(s3, bucket) == []


def test_second_bucket_to_bucket_run_writes_nothing(sandbox: SandboxInfo, s3: Any,
                                                    bucket_factory: Any, kms_key: str, tmp_path: Path) -> None:
    src, dst = bucket_factory("again-src"), bucket_factory("again-dst")
    s3.put_object(Bucket=src, Key="in/a.txt", Body=b"a", ContentType="text/plain", Metadata={"m": "1"})
    s3.put_object(Bucket=src, Key="in/b.bin", Body=b"b" * 100, ServerSideEncryption="AES256")
    s3.put_object(Bucket=src, Key="in/big.bin", Body=os.urandom(6 * MiB))  # multipart: its ETag changes
    sections = {
        "source": source_section(sandbox, src, prefix="in/"),
        "destination": {"bucket": dst, "prefix": "out/"},
        "target": {"mode": "sse-kms", "kms_key_id": kms_key},
        "run": small_run_section(tmp_path / "first.sqlite"),
    }
    first = run_rekey(sandbox, "run", "-q", "-c", str(write_config(tmp_path, sections, "first.toml")))
    assert first.returncode == 0, first.describe()
    before = snapshot(s3, dst)
    assert sorted(before) == ["out/a.txt", "out/b.bin", "out/big.bin"]
    time.sleep(1.1)  # LastModified has one-second resolution
    sections["run"] = small_run_section(tmp_path / "second.sqlite")
    result = run_rekey(sandbox, "run", "-q", "-c", str(write_config(tmp_path, sections, "second.toml")),
                       "--report", str(tmp_path / "second.json"))
    assert result.returncode == 0, result.describe()
    report = load_report(tmp_path / "second.json")
    assert {(o["key"], o["action"]) for o in report["objects"]} == {
        ("in/a.txt", "skip"), ("in/b.bin", "skip"), ("in/big.bin", "skip")}
    assert snapshot(s3, dst) == before, "the second run rewrote destination objects"


def test_status_without_a_checkpoint_says_so(sandbox: SandboxInfo, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"source": {"bucket": "whatever"}, "target": {"mode": "sse-s3"},
                                     "run": {"checkpoint": str(tmp_path / "none.sqlite")}})
    result = run_rekey(sandbox, "status", "-c", str(config))
    assert result.returncode == 3, result.describe()
    assert one_line_error(result) == f"{tmp_path / 'none.sqlite'}: no checkpoint here (run `rekey run` first)"
    assert not (tmp_path / "none.sqlite").exists()


def test_plan_counts_per_source_mode_and_action_and_writes_nothing(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                                   kms_key: str, tmp_path: Path) -> None:
    sse_c_key = os.urandom(32)
    key_file = write_key_file(tmp_path, "src.key", sse_c_key)
    big = os.urandom(6 * MiB)
    s3.put_object(Bucket=bucket, Key="p1", Body=b"x" * 10)
    s3.put_object(Bucket=bucket, Key="p2", Body=b"y" * 20)
    s3.put_object(Bucket=bucket, Key="p3-big", Body=big)
    s3.put_object(Bucket=bucket, Key="s3", Body=b"z" * 30, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="kms", Body=b"k" * 40, ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key)
    s3.put_object(Bucket=bucket, Key="ssec", Body=b"c" * 50, **sse_c_params(sse_c_key))
    before = snapshot(s3, bucket, {"ssec": sse_c_key})
    state_dir = tmp_path / "state"
    config = write_config(tmp_path, {
        "source": source_section(sandbox, bucket, sse_c_key_file=str(key_file)),
        "target": {"mode": "sse-kms", "kms_key_id": kms_key},
        "run": small_run_section(state_dir / "cp.sqlite"),
    })
    time.sleep(1.1)  # LastModified has one-second resolution: a write during `plan` would show
    result = run_rekey(sandbox, "plan", "-c", str(config), "--json")
    assert result.returncode == 0, result.describe()
    plan = json.loads(result.stdout)
    rows = {(r["source_mode"], r["action"]): (r["objects"], r["bytes"]) for r in plan["plan"]}
    assert rows == {
        ("none", "copy"): (2, 30),
        ("none", "multipart-copy"): (1, len(big)),
        ("sse-s3", "copy"): (1, 30),
        ("sse-kms", "skip"): (1, 40),
        ("sse-c", "copy"): (1, 50),
    }
    assert (plan["objects"], plan["bytes"], plan["errors"]) == (6, 150 + len(big), [])

    text = run_rekey(sandbox, "plan", "-c", str(config))
    assert text.returncode == 0, text.describe()
    assert any(line.split()[:4] == ["sse-kms", "skip", "1", "40"] for line in text.stdout.splitlines()), text.stdout

    assert snapshot(s3, bucket, {"ssec": sse_c_key}) == before, "`rekey plan` modified objects"
    assert open_uploads(s3, bucket) == []
    assert not state_dir.exists(), "`rekey plan` created a checkpoint"


# --- bad input -----------------------------------------------------------------------------------------------


def test_malformed_toml(sandbox: SandboxInfo, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[source]\nbucket = "b"\n[target\nmode = "sse-s3"\n')
    result = run_rekey(sandbox, "run", "-c", str(config))
    assert result.returncode == 2, result.describe()
    assert one_line_error(result).startswith(f"{config}: malformed TOML: ")
    assert not (tmp_path / "rekey.sqlite").exists()


def test_unknown_mode(sandbox: SandboxInfo, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"source": {"bucket": "b"}, "target": {"mode": "aes-gcm"}})
    result = run_rekey(sandbox, "run", "-c", str(config))
    assert result.returncode == 2, result.describe()
    assert one_line_error(result) == (
        "target.mode: unknown value 'aes-gcm' "
        '(one of "none", "sse-s3", "sse-kms", "dsse-kms", "sse-c", "cse")')


@pytest.mark.parametrize("mode", ["sse-kms", "dsse-kms"])
def test_missing_kms_key_id(mode: str, sandbox: SandboxInfo, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"source": {"bucket": "b"}, "target": {"mode": mode}})
    result = run_rekey(sandbox, "run", "-c", str(config))
    assert result.returncode == 2, result.describe()
    assert one_line_error(result) == f'target.kms_key_id: required when mode = "{mode}"'


NEITHER = "key file must hold 32 raw bytes or their base64 (it holds {} bytes that are neither)"


@pytest.mark.parametrize(("section", "contents", "problem"), [
    ("target", b"\x00\xff" * 8, NEITHER.format(16)),
    ("target", base64.b64encode(b"\x01" * 24) + b"\n", "key must be 32 bytes, the file's base64 decodes to 24"),
    ("source", b"\x00\xfe\x01" * 11, NEITHER.format(33)),
], ids=["target-raw-16", "target-base64-24", "source-raw-33"])
def test_sse_c_key_of_wrong_length(section: str, contents: bytes, problem: str, sandbox: SandboxInfo,
                                   tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path, "short.key", contents)
    sections: dict[str, dict[str, Any]] = {"source": {"bucket": "b"}, "target": {"mode": "sse-s3"}}
    if section == "target":
        sections["target"] = {"mode": "sse-c", "sse_c_key_file": str(key_file)}
    else:
        sections["source"]["sse_c_key_file"] = str(key_file)
    result = run_rekey(sandbox, "run", "-c", str(write_config(tmp_path, sections)))
    assert result.returncode == 2, result.describe()
    assert one_line_error(result) == f"{section}.sse_c_key_file: {key_file}: {problem}"


def test_missing_bucket(sandbox: SandboxInfo, tmp_path: Path) -> None:
    config = write_config(tmp_path, {
        "source": source_section(sandbox, "no-such-bucket-for-rekey"),
        "target": {"mode": "sse-s3"},
        "run": {"checkpoint": str(tmp_path / "cp.sqlite")},
    })
    result = run_rekey(sandbox, "run", "-c", str(config))
    assert result.returncode == 3, result.describe()
    assert one_line_error(result) == "head_bucket s3://no-such-bucket-for-rekey: source bucket does not exist"


def test_missing_destination_bucket(sandbox: SandboxInfo, bucket: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, {
        "source": source_section(sandbox, bucket),
        "destination": {"bucket": "no-such-destination-for-rekey"},
        "target": {"mode": "sse-s3"},
        "run": {"checkpoint": str(tmp_path / "cp.sqlite")},
    })
    result = run_rekey(sandbox, "run", "-c", str(config))
    assert result.returncode == 3, result.describe()
    assert one_line_error(result) == "head_bucket s3://no-such-destination-for-rekey: destination bucket does not exist"


def test_unreachable_endpoint_fails_fast(sandbox: SandboxInfo, tmp_path: Path) -> None:
    config = write_config(tmp_path, {
        "source": {"bucket": "b", "endpoint_url": "http://127.0.0.1:1"},
        "target": {"mode": "sse-s3"},
        "run": {"checkpoint": str(tmp_path / "cp.sqlite")},
    })
    result = run_rekey(sandbox, "run", "-c", str(config), timeout=60)
    assert result.returncode == 3, result.describe()
    assert one_line_error(result).startswith("head_bucket s3://b: endpoint unreachable"), result.describe()
    assert result.seconds < 20, f"`rekey run` took {result.seconds:.1f}s to give up on a closed port"


def test_sse_c_over_plain_http_is_refused(sandbox: SandboxInfo, bucket: str, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path, "k.key", os.urandom(32))
    cases = {
        "source key": ({**source_section(sandbox, bucket, https=False), "sse_c_key_file": str(key_file)},
                       {"mode": "sse-s3"}, "source.endpoint_url"),
        "target sse-c": (source_section(sandbox, bucket, https=False),
                         {"mode": "sse-c", "sse_c_key_file": str(key_file)}, "source.endpoint_url"),
    }
    for name, (source, target, where) in cases.items():
        config = write_config(tmp_path, {"source": source, "target": target,
                                         "run": {"checkpoint": str(tmp_path / "cp.sqlite")}}, f"{len(name)}.toml")
        for command in ("run", "plan"):
            result = run_rekey(sandbox, command, "-c", str(config))
            assert result.returncode == 2, f"{name} / {command}\n{result.describe()}"
            message = one_line_error(result)
            assert message.startswith(f"{where}: SSE-C keys are only sent over HTTPS"), message
            assert sandbox.s3_http in message, message
    assert not (tmp_path / "cp.sqlite").exists()


def test_wrong_sse_c_source_key_fails_those_objects_only(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                         kms_key: str, tmp_path: Path) -> None:
    right, wrong = os.urandom(32), os.urandom(32)
    for i in range(2):
        s3.put_object(Bucket=bucket, Key=f"ssec-{i}", Body=f"secret {i}".encode(), **sse_c_params(right))
        s3.put_object(Bucket=bucket, Key=f"plain-{i}", Body=f"plain {i}".encode())
    readable = {f"ssec-{i}": right for i in range(2)}
    before = snapshot(s3, bucket, readable)
    config = write_config(tmp_path, {
        "source": source_section(sandbox, bucket, sse_c_key_file=str(write_key_file(tmp_path, "w.key", wrong))),
        "target": {"mode": "sse-kms", "kms_key_id": kms_key},
        "run": small_run_section(tmp_path / "cp.sqlite"),
    })
    result = run_rekey(sandbox, "run", "-q", "-c", str(config), "--report", str(tmp_path / "report.json"))
    assert result.returncode == 1, result.describe()
    entries = report_by_key(load_report(tmp_path / "report.json"))
    assert {k: e["state"] for k, e in entries.items()} == {
        "plain-0": "done", "plain-1": "done", "ssec-0": "failed", "ssec-1": "failed"}
    for i in range(2):
        error = entries[f"ssec-{i}"]["error"]
        assert f"s3://{bucket}/ssec-{i}" in error and "sse_c_key_file" in error and "does not open" in error, error
        assert f"failed: ssec-{i}: " in result.stdout, "the summary must list the failed objects"
        assert read_back(s3, bucket, f"ssec-{i}", right) == f"secret {i}".encode()
        assert head(s3, bucket, f"plain-{i}")["ServerSideEncryption"] == "aws:kms"
    after = snapshot(s3, bucket, readable)
    assert {k: after[k] for k in readable} == {k: before[k] for k in readable}, "SSE-C objects were rewritten"


# --- secrets -------------------------------------------------------------------------------------------------


def test_no_key_material_in_output_report_or_checkpoint(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                        tmp_path: Path) -> None:
    key_a, key_b = os.urandom(32), os.urandom(32)
    s3.put_object(Bucket=bucket, Key="small", Body=b"s" * 1000, **sse_c_params(key_a))
    s3.put_object(Bucket=bucket, Key="large", Body=os.urandom(6 * MiB), **sse_c_params(key_a))
    s3.put_object(Bucket=bucket, Key="plain", Body=b"p" * 100)
    # Key files as base64 text, the other accepted spelling.
    file_a = write_key_file(tmp_path, "a.key", base64.b64encode(key_a) + b"\n")
    file_b = write_key_file(tmp_path, "b.key", key_b)
    checkpoint = tmp_path / "cp.sqlite"
    config = write_config(tmp_path, {
        "source": source_section(sandbox, bucket, sse_c_key_file=str(file_a)),
        "target": {"mode": "sse-c", "sse_c_key_file": str(file_b)},
        "run": small_run_section(checkpoint),
    })
    report_path = tmp_path / "report.json"
    result = run_rekey(sandbox, "-v", "run", "-c", str(config), "--report", str(report_path))
    status = run_rekey(sandbox, "-v", "status", "-c", str(config), "--json")
    assert result.returncode == 0, result.describe()[-3000:]
    assert " INFO " in result.stderr or " DEBUG " in result.stderr, "-v must log (or this test checks little)"
    assert {o["state"] for o in load_report(report_path)["objects"]} == {"done"}
    places = {
        "run stdout": result.stdout.encode(), "run stderr": result.stderr.encode(),
        "status output": (status.stdout + status.stderr).encode(), "report": report_path.read_bytes(),
    }
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = Path(str(checkpoint) + suffix)
        if path.exists():
            places[f"checkpoint{suffix}"] = path.read_bytes()
    leaks = [f"{name}: key {which} as {spelling}"
             for which, raw in (("A (source)", key_a), ("B (target)", key_b))
             for spelling, needle in key_spellings(raw).items()
             for name, data in places.items() if needle in data]
    assert not leaks, "key material found:\n" + "\n".join(leaks)
