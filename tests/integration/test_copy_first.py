"""Bucket to bucket, objects the destination lacks are copied before they are read ([run] copy_first):
two requests per object, with everything the HEAD-first path guarantees. Against SeaweedFS."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from engine.sandbox import SandboxInfo
from tests.cli_helpers import load_report, report_by_key, run_rekey, source_section, write_config
from tests.integration.test_cse_engine import official
from workers.carry import COPY_FIRST_CHECKS

N = 24
# Buckets, website check, the target probe, listings, the tag probe (5: put, copy, tags, 2 deletes), and, while
# it has not answered, the tags of the first tagged copies compared with their sources' (two requests each): the
# same whatever the object count.
STARTUP_REQUESTS = 12 + 5 + 2 * COPY_FIRST_CHECKS


def seed_plain(s3: Any, bucket: str) -> dict[str, bytes]:
    bodies = {f"in/{i:03d}.bin": os.urandom(100 + 37 * i) for i in range(N)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/x-rekey", CacheControl="no-cache",
                      ContentDisposition="inline", Metadata={"owner": "qa", "n": key[-7:-4]},
                      Tagging="team=storage&tier=2")
    return bodies


def run(sandbox: SandboxInfo, tmp_path: Path, name: str, src: str, dst: str, target: dict[str, Any],
        kms: bool = False, **run_extra: Any) -> dict[str, Any]:
    sections: dict[str, dict[str, Any]] = {
        "source": source_section(sandbox, src, https=False, prefix="in/"),
        "destination": {"bucket": dst, "prefix": "out/"},
        "target": target,
        "run": {"checkpoint": str(tmp_path / f"{name}.sqlite"), "concurrency": 8, **run_extra},
    }
    if kms:
        sections["kms"] = {"endpoint_url": sandbox.kms_url, "region": sandbox.region}
    report = tmp_path / f"{name}.json"
    result = run_rekey(sandbox, "run", "-q", "-c", str(write_config(tmp_path, sections, f"{name}.toml")),
                       "--report", str(report))
    assert result.returncode == 0, result.describe()
    return load_report(report)


def check_copies(s3: Any, dst: str, bodies: dict[str, bytes], *, kms_key: str | None = None) -> None:
    for key, body in bodies.items():
        out = "out/" + key.removeprefix("in/")
        got = s3.get_object(Bucket=dst, Key=out)
        assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(body).digest(), out
        if kms_key is None:
            assert got.get("ServerSideEncryption") == "AES256", out
        else:
            assert got.get("ServerSideEncryption") == "aws:kms", out
            assert str(got.get("SSEKMSKeyId")).endswith(kms_key), out
        assert (got["ContentType"], got["CacheControl"], got["ContentDisposition"]) == (
            "text/x-rekey", "no-cache", "inline"), out
        assert got["Metadata"] == {"owner": "qa", "n": key[-7:-4]}, out
        tags = {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=dst, Key=out)["TagSet"]}
        assert tags == {"team": "storage", "tier": "2"}, out


def test_absent_objects_take_two_requests_each_and_arrive_whole(sandbox: SandboxInfo, s3: Any,
                                                                bucket_factory: Any, tmp_path: Path) -> None:
    src, dst = bucket_factory("cf-src"), bucket_factory("cf-dst")
    bodies = seed_plain(s3, src)
    report = run(sandbox, tmp_path, "first", src, dst, {"mode": "sse-s3"})
    assert report["run"]["requests"] <= 2 * N + STARTUP_REQUESTS, report["run"]
    entries = report_by_key(report)
    assert {(e["state"], e["action"], e["source_mode"]) for e in entries.values()} == {("done", "copy", None)}
    check_copies(s3, dst, bodies)
    # The same run reading every source first: one more request per object, and the source modes known.
    dst2 = bucket_factory("cf-dst2")
    report = run(sandbox, tmp_path, "head-first", src, dst2, {"mode": "sse-s3"}, copy_first=False)
    assert report["run"]["requests"] >= 3 * N, report["run"]
    assert {(e["action"], e["source_mode"]) for e in report["objects"]} == {("copy", "none")}
    check_copies(s3, dst2, bodies)


def test_kms_key_a_to_key_b_by_copy_first(sandbox: SandboxInfo, s3: Any, kms: Any, bucket_factory: Any,
                                         tmp_path: Path) -> None:
    """SSE-KMS under key A to key B, bucket to bucket: the copies come out under key B (in place, SeaweedFS
    would keep key A; bucket to bucket it applies the new key), two requests per object."""
    src, dst = bucket_factory("cfk-src"), bucket_factory("cfk-dst")
    key_a = kms.create_key(Description="a")["KeyMetadata"]["KeyId"]
    key_b = kms.create_key(Description="b")["KeyMetadata"]["KeyId"]
    bodies = {f"in/{i:03d}.bin": os.urandom(500 + i) for i in range(6)}
    for key, body in bodies.items():
        s3.put_object(Bucket=src, Key=key, Body=body, ContentType="text/x-rekey", CacheControl="no-cache",
                      ContentDisposition="inline", Metadata={"owner": "qa", "n": key[-7:-4]},
                      Tagging="team=storage&tier=2", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_a)
    report = run(sandbox, tmp_path, "kms", src, dst, {"mode": "sse-kms", "kms_key_id": key_b})
    assert {(e["state"], e["action"]) for e in report["objects"]} == {("done", "copy")}
    assert report["run"]["requests"] <= 2 * len(bodies) + STARTUP_REQUESTS, report["run"]
    check_copies(s3, dst, bodies, kms_key=key_b)


def test_client_side_source_without_keys_is_refused_and_not_left_copied(
        sandbox: SandboxInfo, s3: Any, kms: Any, bucket_factory: Any, tmp_path: Path) -> None:
    src, dst = bucket_factory("cfc-src"), bucket_factory("cfc-dst")
    key_id = kms.create_key(Description="cse")["KeyMetadata"]["KeyId"]
    official(sandbox, key_id).put_object(Bucket=src, Key="in/0-secret.bin", Body=b"s" * 3000)
    s3.put_object(Bucket=src, Key="in/1-plain.bin", Body=b"p" * 3000)
    report = run(sandbox, tmp_path, "cse", src, dst, {"mode": "sse-s3"}, concurrency=1)
    entries = report_by_key(report)
    assert entries["in/0-secret.bin"]["action"] == "refuse", entries
    assert "allow_client_side_decrypt" in entries["in/0-secret.bin"]["error"]
    assert entries["in/1-plain.bin"]["state"] == "done", entries
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=dst).get("Contents", [])]
    assert listed == ["out/1-plain.bin"], "the refused client-side object must not be left in the destination"


def test_client_side_source_is_decrypted_when_allowed(sandbox: SandboxInfo, s3: Any, kms: Any,
                                                     bucket_factory: Any, tmp_path: Path) -> None:
    """With [kms] and allow_client_side_decrypt, a client-side object copied first is found by the HEAD of
    the copy, taken back and decrypted into the target; plain objects keep taking two requests."""
    src, dst = bucket_factory("cfd-src"), bucket_factory("cfd-dst")
    key_id = kms.create_key(Description="cse")["KeyMetadata"]["KeyId"]
    secret = os.urandom(5000)
    official(sandbox, key_id).put_object(Bucket=src, Key="in/0-secret.bin", Body=secret)
    s3.put_object(Bucket=src, Key="in/1-plain.bin", Body=b"p" * 3000)
    report = run(sandbox, tmp_path, "cse-decrypt", src, dst, {"mode": "sse-s3", "allow_client_side_decrypt": True},
                 kms=True, concurrency=1)
    entries = report_by_key(report)
    assert (entries["in/0-secret.bin"]["state"], entries["in/0-secret.bin"]["action"]) == ("done", "stream")
    got = s3.get_object(Bucket=dst, Key="out/0-secret.bin")
    assert got["Body"].read() == secret and got["ServerSideEncryption"] == "AES256"
    assert not any(k.startswith("x-amz-") for k in got["Metadata"]), got["Metadata"]
    assert (entries["in/1-plain.bin"]["action"], entries["in/1-plain.bin"]["source_mode"]) == ("copy", None)
    assert s3.get_object(Bucket=dst, Key="out/1-plain.bin")["Body"].read() == b"p" * 3000
