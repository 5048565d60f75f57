"""`rekey audit` against SeaweedFS: exact counts and bytes per mode and key, versions, CSV, before/after chart."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from engine.chart import AFTER_COLOR, BEFORE_COLOR, HEIGHT, PNG_SIGNATURE, WIDTH
from engine.cli import main
from engine.sandbox import SandboxInfo
from tests.helpers import sse_c_params

MODES = ("none", "sse-s3", "sse-kms", "dsse-kms", "sse-c", "cse")


def b64(n: int) -> str:
    return base64.b64encode(os.urandom(n)).decode()


V2_ENVELOPE = {"x-amz-key-v2": b64(184), "x-amz-iv": b64(12),
               "x-amz-matdesc": '{"aws:x-amz-cek-alg":"AES/GCM/NoPadding"}',
               "x-amz-wrap-alg": "kms+context", "x-amz-cek-alg": "AES/GCM/NoPadding", "x-amz-tag-len": "128"}
V3_ON_OBJECT = {"x-amz-c": "115", "x-amz-d": b64(28), "x-amz-i": b64(28)}
V3_INSTRUCTION = {"x-amz-3": b64(184), "x-amz-w": "12", "x-amz-t": '{"purpose":"test"}'}


def write_config(tmp_path: Path, sandbox: SandboxInfo, bucket: str, target: str, *,
                 sse_c_key: bytes | None = None) -> str:
    lines = ["[source]", f'bucket = "{bucket}"', f'endpoint_url = "{sandbox.s3_https}"',
             f'ca_bundle = "{sandbox.ca_bundle}"']
    if sse_c_key is not None:
        (tmp_path / "source-c.key").write_bytes(sse_c_key)
        os.chmod(tmp_path / "source-c.key", 0o600)
        lines.append('sse_c_key_file = "source-c.key"')
    lines += ["[target]", target, "[kms]", f'endpoint_url = "{sandbox.kms_url}"',
              "[run]", f'checkpoint = "{tmp_path / "cp.sqlite"}"']
    path = tmp_path / f"{bucket}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB PNG whose rows all use filter 0 (what chart.py writes)."""
    assert data[:8] == PNG_SIGNATURE
    pos, idat, ihdr = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        if kind == b"IHDR":
            ihdr = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color_type = struct.unpack(">IIBB", ihdr[:10])
    assert (depth, color_type) == (8, 2)
    raw = zlib.decompress(idat)
    stride = 1 + width * 3
    assert len(raw) == stride * height
    rows = [raw[y * stride:(y + 1) * stride] for y in range(height)]
    assert all(r[0] == 0 for r in rows)
    return width, height, [r[1:] for r in rows]


def pixels_of(rows: list[bytes], color: tuple[int, int, int]) -> list[int]:
    """x coordinates of every pixel of `color`."""
    want = bytes(color)
    return [x for row in rows for x in range(len(row) // 3) if row[x * 3:x * 3 + 3] == want]


def test_audit_counts_every_mode_and_key_exactly(
        s3: Any, bucket: str, kms: Any, kms_key: str, sandbox: SandboxInfo, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    known, unknown = os.urandom(32), os.urandom(32)
    key_arn = kms.describe_key(KeyId=kms_key)["KeyMetadata"]["Arn"]
    s3.put_object(Bucket=bucket, Key="plain/a", Body=b"a" * 100)
    s3.put_object(Bucket=bucket, Key="plain/b", Body=b"b" * 250)
    s3.put_object(Bucket=bucket, Key="s3/a", Body=b"s" * 300, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="kms/a", Body=b"k" * 400, ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key)
    s3.put_object(Bucket=bucket, Key="c/known", Body=b"c" * 500, **sse_c_params(known))
    s3.put_object(Bucket=bucket, Key="c/unknown", Body=b"u" * 600, **sse_c_params(unknown))
    s3.put_object(Bucket=bucket, Key="cse/v2", Body=b"x" * 700, Metadata=V2_ENVELOPE)
    s3.put_object(Bucket=bucket, Key="cse/v3", Body=b"y" * 800, Metadata=V3_ON_OBJECT)
    instruction = json.dumps(V3_INSTRUCTION).encode()
    s3.put_object(Bucket=bucket, Key="cse/v3.instruction", Body=instruction,
                  Metadata={"x-amz-crypto-instr-file": ""})
    cfg = write_config(tmp_path, sandbox, bucket, f'mode = "sse-kms"\nkms_key_id = "{kms_key}"', sse_c_key=known)

    code, out, err = run_cli(capsys, "audit", "-c", cfg, "--json")

    assert code == 0, err
    report = json.loads(out)
    assert report["by_mode"] == {
        "none": {"objects": 2, "bytes": 350}, "sse-s3": {"objects": 1, "bytes": 300},
        "sse-kms": {"objects": 1, "bytes": 400}, "dsse-kms": {"objects": 0, "bytes": 0},
        "sse-c": {"objects": 2, "bytes": 1100}, "cse": {"objects": 2, "bytes": 1500}}
    assert (report["objects"], report["bytes"]) == (8, 3650)
    known_md5 = base64.b64encode(hashlib.md5(known).digest()).decode()
    assert report["by_key"]["sse-c"] == {known_md5: {"objects": 1, "bytes": 500},
                                         "unknown key": {"objects": 1, "bytes": 600}}
    assert report["by_key"]["sse-kms"] == {key_arn: {"objects": 1, "bytes": 400}}
    assert report["by_key"]["cse"] == {"v2/kms+context": {"objects": 1, "bytes": 700},
                                       "v3/kms+context": {"objects": 1, "bytes": 800}}
    assert report["instruction_files"] == {"objects": 1, "bytes": len(instruction)}
    assert sorted(m["key"] for m in report["not_in_target"]) == [
        "c/known", "c/unknown", "cse/v2", "cse/v3", "plain/a", "plain/b", "s3/a"]
    assert report["in_target"]["objects"] == 1
    assert report["noncurrent"]["audited"] is False

    # Without the config's key, the known SSE-C object is "unknown key" too.
    code, out, _ = run_cli(capsys, "audit", "--bucket", bucket, "--endpoint-url", sandbox.s3_https,
                           "--ca-bundle", sandbox.ca_bundle, "--prefix", "c/", "--json")
    assert code == 0
    assert json.loads(out)["by_key"]["sse-c"] == {"unknown key": {"objects": 2, "bytes": 1100}}

    code, out, _ = run_cli(capsys, "audit", "-c", cfg, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 9
    by_key = {r["key"]: r for r in rows}
    assert by_key["c/known"]["sse_c_key_md5"] == known_md5
    assert by_key["cse/v2"]["cse_format"] == "v2" and by_key["cse/v2"]["cse_wrap"] == "kms+context"
    assert by_key["cse/v3.instruction"]["cse_format"] == "instruction-file"
    assert by_key["kms/a"]["kms_key_id"] == key_arn and by_key["kms/a"]["is_latest"] == "true"

    code, table, _ = run_cli(capsys, "audit", "-c", cfg)
    assert code == 0 and "sse-kms" in table and "not in target (7" in table
    for secret in (known, unknown):  # no key material in any output
        for text in (out, table):
            assert base64.b64encode(secret).decode() not in text and secret.hex() not in text


def test_after_migration_audit_is_all_in_target_and_chart_shows_both(
        s3: Any, bucket: str, kms_key: str, sandbox: SandboxInfo, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"obj{i}", Body=os.urandom(1000 * (i + 1)))
    s3.put_object(Bucket=bucket, Key="old-s3", Body=os.urandom(4000), ServerSideEncryption="AES256")
    cfg = write_config(tmp_path, sandbox, bucket, f'mode = "sse-kms"\nkms_key_id = "{kms_key}"')
    before = tmp_path / "before.json"

    code, out, _ = run_cli(capsys, "audit", "-c", cfg, "--json", "--fail-unless-target")
    assert code == 1
    before.write_text(out)
    assert json.loads(out)["by_mode"]["none"] == {"objects": 3, "bytes": 6000}

    code, _, err = run_cli(capsys, "run", "-c", cfg, "-q")
    assert code == 0, err

    chart = tmp_path / "chart.png"
    code, out, _ = run_cli(capsys, "audit", "-c", cfg, "--json", "--fail-unless-target",
                           "--chart", str(chart), "--before", str(before))
    after = json.loads(out)
    assert code == 0
    assert after["by_mode"]["sse-kms"] == {"objects": 4, "bytes": 10000}
    assert all(after["by_mode"][m]["objects"] == 0 for m in MODES if m != "sse-kms")
    assert after["not_in_target"] == []
    assert after["in_target"]["percent_bytes"] == 100.0

    width, height, rows = decode_png(chart.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    before_x, after_x = pixels_of(rows, BEFORE_COLOR), pixels_of(rows, AFTER_COLOR)
    assert len(before_x) > 1000 and len(after_x) > 1000  # bars, not just the legend swatches (100 px)
    legend_free = [x for x in before_x if x > 40], [x for x in after_x if x > 40]
    # "before" is mostly none (first group), "after" all sse-kms (third group): its bar lies to the right.
    assert sum(legend_free[1]) / len(legend_free[1]) > sum(legend_free[0]) / len(legend_free[0]) + 100

    # The chart from two saved audits alone needs no bucket.
    after_file, chart2 = tmp_path / "after.json", tmp_path / "chart2.png"
    after_file.write_text(out)
    code, _, _ = run_cli(capsys, "audit", "--chart", str(chart2), "--before", str(before), "--after", str(after_file))
    assert code == 0 and chart2.read_bytes() == chart.read_bytes()


def test_versions_are_audited_apart(s3: Any, bucket: str, kms_key: str, sandbox: SandboxInfo,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="doc", Body=b"1" * 10)
    s3.put_object(Bucket=bucket, Key="doc", Body=b"2" * 20, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="doc", Body=b"3" * 30, ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key)
    s3.put_object(Bucket=bucket, Key="gone", Body=b"4" * 40)
    s3.delete_object(Bucket=bucket, Key="gone")
    flags = ["--bucket", bucket, "--endpoint-url", sandbox.s3_https, "--ca-bundle", sandbox.ca_bundle, "--json"]

    code, out, _ = run_cli(capsys, "audit", *flags, "--versions")

    report = json.loads(out)
    assert code == 0
    assert report["by_mode"]["sse-kms"] == {"objects": 1, "bytes": 30}
    assert report["objects"] == 1
    old = report["noncurrent"]
    assert old["audited"] is True and old["delete_markers"] == 1
    assert (old["objects"], old["bytes"]) == (3, 70)
    assert old["by_mode"]["none"] == {"objects": 2, "bytes": 50}
    assert old["by_mode"]["sse-s3"] == {"objects": 1, "bytes": 20}

    code, out, _ = run_cli(capsys, "audit", *flags)
    assert json.loads(out)["noncurrent"] == {**old, "audited": False, "objects": 0, "bytes": 0, "delete_markers": 0,
                                             "by_mode": {m: {"objects": 0, "bytes": 0} for m in MODES},
                                             "by_key": {"sse-kms": {}, "dsse-kms": {}, "sse-c": {}, "cse": {}}}
