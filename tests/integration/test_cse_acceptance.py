"""Acceptance of issue 3 (client-side encryption) end to end: the rekey CLI against SeaweedFS and moto KMS, with AWS's
official S3 Encryption Client as the independent writer and reader, and `cryptography` for hand checks.

Every official client gets its own boto3 client (it registers hooks on the client it wraps); raw bytes and metadata
are read with the plain `s3` fixture.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA512
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from s3_encryption import S3EncryptionClient, S3EncryptionClientConfig
from s3_encryption.materials.kms_keyring import KmsKeyring as OfficialKmsKeyring
from s3_encryption.materials.materials import AlgorithmSuite, CommitmentPolicy

from engine.sandbox import SandboxInfo, create_kms_key
from tests.cli_helpers import (
    MiB,
    checkpoint_rows,
    list_keys,
    load_report,
    open_uploads,
    popen_rekey,
    run_rekey,
    small_run_section,
    source_section,
    write_config,
    write_key_file,
)
from tests.helpers import kms_client, s3_client
from workers.cse import S3EC_KEYS

MARKER = {"x-amz-crypto-instr-file": ""}


# --- helpers ---------------------------------------------------------------------------------------------------

def official(info: SandboxInfo, key_id: str, *, allow_v2: bool = False, v2_writer: bool = False) -> Any:
    """The official client on its own boto3 client. `v2_writer` writes format V2 (what v3 clients write)."""
    kms = kms_client(info)
    arn = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    if v2_writer:
        config = S3EncryptionClientConfig(keyring=OfficialKmsKeyring(kms, arn),
                                          encryption_algorithm=AlgorithmSuite.ALG_AES_256_GCM_IV12_TAG16_NO_KDF,
                                          commitment_policy=CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT)
    else:
        policy = CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT if allow_v2 else \
            CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
        config = S3EncryptionClientConfig(keyring=OfficialKmsKeyring(kms, arn), commitment_policy=policy)
    return S3EncryptionClient(s3_client(info), config)


def official_multipart(client: Any, bucket: str, key: str, parts: list[bytes], **create: Any) -> None:
    """One GCM stream across parts, in order, the tag appended to the last (IsLastPart)."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, **create)
    done = []
    for number, data in enumerate(parts, start=1):
        resp = client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                                  Body=data, IsLastPart=number == len(parts))
        done.append({"PartNumber": number, "ETag": resp["ETag"]})
    client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": done})


def rekey(info: SandboxInfo, tmp: Path, name: str, sections: Mapping[str, Mapping[str, Any]],
          **run: Any) -> tuple[int, dict[str, Any], str]:
    """Run `rekey run` with `sections` plus [kms] and a small-part [run]; (exit code, report, output)."""
    cfg = write_config(tmp, {**sections, "kms": {"endpoint_url": info.kms_url, "region": info.region},
                             "run": small_run_section(tmp / f"{name}.sqlite", **run)}, name=f"{name}.toml")
    report = tmp / f"{name}.json"
    result = run_rekey(info, "run", "-q", "-c", str(cfg), "--report", str(report))
    data = load_report(report) if report.exists() else {}
    return result.returncode, data, result.describe()


def by_key(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["key"]: o for o in report["objects"]}


def raw(s3: Any, bucket: str, key: str) -> tuple[bytes, dict[str, Any]]:
    resp = s3.get_object(Bucket=bucket, Key=key)
    return resp["Body"].read(), resp


def fingerprint(s3: Any, bucket: str, key: str) -> tuple[str, str, int, dict[str, str]]:
    """What a reader of the stored object sees: SHA-256 of the raw body, ETag, size, metadata."""
    body, resp = raw(s3, bucket, key)
    return hashlib.sha256(body).hexdigest(), resp["ETag"], len(body), dict(resp["Metadata"])


def s3ec_keys(metadata: Mapping[str, str]) -> set[str]:
    return {k for k in metadata if k.lower() in S3EC_KEYS}


def v3_content_key(data_key: bytes, metadata: Mapping[str, str]) -> bytes:
    """§3: HKDF-SHA512 from (message id, data key); the commitment is checked before the key is used."""
    prk = hmac.new(base64.b64decode(metadata["x-amz-i"]), data_key, hashlib.sha512).digest()
    commitment = HKDFExpand(SHA512(), 28, b"\x00\x73COMMITKEY").derive(prk)
    assert hmac.compare_digest(commitment, base64.b64decode(metadata["x-amz-d"]))
    return HKDFExpand(SHA512(), 32, b"\x00\x73DERIVEKEY").derive(prk)


def v3_decrypt(data_key: bytes, metadata: Mapping[str, str], blob: bytes) -> bytes:
    return AESGCM(v3_content_key(data_key, metadata)).decrypt(b"\x01" * 12, blob, b"\x00\x73")


def aes_unwrap(wrap_key: bytes, edk: bytes) -> bytes:
    """§4 AES/GCM (V3): EDK = IV(12) || ciphertext || tag, AAD = "115"."""
    return AESGCM(wrap_key).decrypt(edk[:12], edk[12:], b"115")


def no_open_uploads(s3: Any, *buckets: str) -> None:
    for name in buckets:
        assert open_uploads(s3, name) == [], f"multipart uploads left behind in {name}"


# --- 1. objects the official client writes, migrated by rekey ---------------------------------------------------

def seed_official(info: SandboxInfo, bucket: str, key_id: str) -> dict[str, bytes]:
    v3 = official(info, key_id)
    v2 = official(info, key_id, v2_writer=True)
    bodies = {"v3-put.txt": os.urandom(3001), "v3-empty": b"",
              "v3-mpu.bin": os.urandom(11 * MiB + 777), "v2-put.bin": os.urandom(4321)}
    v3.put_object(Bucket=bucket, Key="v3-put.txt", Body=bodies["v3-put.txt"], Metadata={"owner": "qa"},
                  ContentType="text/x-test", EncryptionContext={"tenant": "acme"})
    v3.put_object(Bucket=bucket, Key="v3-empty", Body=b"", Metadata={"owner": "qa"})
    mpu = bodies["v3-mpu.bin"]
    official_multipart(v3, bucket, "v3-mpu.bin", [mpu[:5 * MiB], mpu[5 * MiB:10 * MiB], mpu[10 * MiB:]],
                       Metadata={"owner": "qa"}, EncryptionContext={"job": "mpu"})
    v2.put_object(Bucket=bucket, Key="v2-put.bin", Body=bodies["v2-put.bin"], Metadata={"owner": "qa"},
                  EncryptionContext={"tenant": "acme"})
    return bodies


def test_official_client_objects_to_sse_kms(sandbox: SandboxInfo, s3: Any, bucket: str, tmp_path: Path) -> None:
    key_a, key_b = create_kms_key(sandbox), create_kms_key(sandbox)
    bodies = seed_official(sandbox, bucket, key_a)
    assert "x-amz-key-v2" in s3.head_object(Bucket=bucket, Key="v2-put.bin")["Metadata"]
    assert "x-amz-3" in s3.head_object(Bucket=bucket, Key="v3-mpu.bin")["Metadata"]
    code, rep, out = rekey(sandbox, tmp_path, "to-kms", {
        "source": source_section(sandbox, bucket),
        "target": {"mode": "sse-kms", "kms_key_id": key_b, "allow_client_side_decrypt": True}})
    assert code == 0, out
    objects = by_key(rep)
    assert set(objects) == set(bodies)
    for key, body in bodies.items():
        assert (objects[key]["state"], objects[key]["action"], objects[key]["source_mode"]) == \
            ("done", "stream", "cse"), objects[key]
        got_body, got = raw(s3, bucket, key)
        assert got_body == body, key
        assert got["ServerSideEncryption"] == "aws:kms" and got["SSEKMSKeyId"].endswith(key_b), key
        assert s3ec_keys(got["Metadata"]) == set(), (key, got["Metadata"])
        assert got["Metadata"] == {"owner": "qa"}, key
    assert s3.head_object(Bucket=bucket, Key="v3-put.txt")["ContentType"] == "text/x-test"
    no_open_uploads(s3, bucket)


def test_official_client_objects_to_new_cse_key(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                tmp_path: Path) -> None:
    key_a, key_b = create_kms_key(sandbox), create_kms_key(sandbox)
    bodies = seed_official(sandbox, bucket, key_a)
    before = {k: fingerprint(s3, bucket, k) for k in bodies}
    assert "x-amz-key-v2" in before["v2-put.bin"][3] and "x-amz-3" in before["v3-mpu.bin"][3]
    code, rep, out = rekey(sandbox, tmp_path, "to-b", {
        "source": source_section(sandbox, bucket),
        "target": {"mode": "cse", "keyring": "kms", "kms_key_id": key_b,
                   "encryption_context": {"project": "rekey"}}})
    assert code == 0, out
    objects = by_key(rep)
    assert {k: (o["state"], o["action"]) for k, o in objects.items()} == {
        "v3-put.txt": ("done", "rewrap"), "v3-empty": ("done", "rewrap"), "v3-mpu.bin": ("done", "rewrap"),
        "v2-put.bin": ("done", "stream")}
    assert all(objects[k]["bytes_through_client"] == 0 for k in bodies if k.startswith("v3"))
    reader = official(sandbox, key_b)  # V3-only policy: a V2 object left as V2 would be refused
    for key, body in bodies.items():
        got = reader.get_object(Bucket=bucket, Key=key, EncryptionContext={"project": "rekey"})
        assert got["Body"].read() == body, key
        meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert meta["owner"] == "qa" and "x-amz-3" in meta and "x-amz-key-v2" not in meta, (key, meta)
        assert json.loads(meta["x-amz-t"]) == {"project": "rekey", "aws:x-amz-cek-alg": "115"}
    for key in ("v3-put.txt", "v3-mpu.bin"):  # re-wrapped: the ciphertext and its message id did not change
        after = fingerprint(s3, bucket, key)
        assert after[0] == before[key][0] and after[3]["x-amz-i"] == before[key][3]["x-amz-i"], key
        assert after[3]["x-amz-3"] != before[key][3]["x-amz-3"], key
    assert s3.head_object(Bucket=bucket, Key="v3-put.txt")["ContentType"] == "text/x-test"
    no_open_uploads(s3, bucket)


# --- 2. rekey writes V2, and instruction files ------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "instruction_file"), [("v2", False), ("v3", True), ("v2", True)],
                         ids=["v2-metadata", "v3-instruction-file", "v2-instruction-file"])
def test_rekey_writes_v2_and_instruction_files(sandbox: SandboxInfo, s3: Any, bucket: str, kms_key: str,
                                               tmp_path: Path, fmt: str, instruction_file: bool) -> None:
    bodies = {"docs/small.txt": os.urandom(1000), "docs/empty": b"", "docs/mpu.bin": os.urandom(11 * MiB + 5)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"owner": "qa"})
    sections = {"source": source_section(sandbox, bucket),
                "target": {"mode": "cse", "keyring": "kms", "kms_key_id": kms_key, "format": fmt,
                           "instruction_file": instruction_file, "encryption_context": {"tenant": "acme"}}}
    code, rep, out = rekey(sandbox, tmp_path, "write", sections)
    assert code == 0, out
    objects = by_key(rep)
    for key in bodies:
        assert (objects[key]["state"], objects[key]["action"]) == ("done", "stream"), objects[key]
    # Instruction files the run itself created are never objects of their own, even when listed by it.
    assert set(objects) == set(bodies), objects
    reader = official(sandbox, kms_key, allow_v2=True)
    markers: dict[str, dict[str, str]] = {}
    for key, body in bodies.items():
        assert reader.get_object(Bucket=bucket, Key=key, EncryptionContext={"tenant": "acme"})[
            "Body"].read() == body, key
        meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert meta["owner"] == "qa"
        wrapped = "x-amz-key-v2" if fmt == "v2" else "x-amz-3"
        if instruction_file:
            assert wrapped not in meta, meta
            ins_body, ins = raw(s3, bucket, key + ".instruction")
            markers[key] = ins["Metadata"]
            keys = json.loads(ins_body)
            assert wrapped in keys, keys
            if fmt == "v3":  # §6: c, d, i stay on the object, never in the file
                assert {"x-amz-c", "x-amz-d", "x-amz-i"} <= set(meta) and not {"x-amz-c", "x-amz-d",
                                                                              "x-amz-i"} & set(keys)
        else:
            assert wrapped in meta and meta["x-amz-cek-alg"] == "AES/GCM/NoPadding", meta
    expected_keys = sorted([*bodies, *(k + ".instruction" for k in bodies)] if instruction_file else bodies)
    assert list_keys(s3, bucket) == expected_keys
    stored = {k: fingerprint(s3, bucket, k) for k in expected_keys}

    # A second run, fresh checkpoint so every object (and every instruction file) is listed again: nothing to do.
    code, rep, out = rekey(sandbox, tmp_path, "again", sections)
    assert code == 0, out
    for key, body in bodies.items():
        try:
            got = reader.get_object(Bucket=bucket, Key=key, EncryptionContext={"tenant": "acme"})["Body"].read()
        except Exception as exc:  # the official client's own error, shown as the failure reason
            pytest.fail(f"{key}: the official client cannot read it after the second run: {exc}")
        assert got == body, key
    objects = by_key(rep)
    assert set(objects) == set(bodies), "an object and its instruction file are one unit"
    migrated = {k: (o["source_mode"], o["action"]) for k, o in objects.items() if o["action"] != "skip"}
    assert not migrated, f"the second run migrated {migrated}"
    assert {o["state"] for o in objects.values()} == {"skipped"}
    assert rep["summary"]["bytes_through_client"] == 0
    assert {k: fingerprint(s3, bucket, k) for k in expected_keys} == stored
    assert list_keys(s3, bucket) == expected_keys
    # §6: rekey sends the marker (value ""); SeaweedFS drops user metadata whose value is empty, so the
    # server keeps either the marker or nothing, never anything else. rekey recognises its instruction
    # files by name and content, which is what the second run above proves.
    assert all(m in (MARKER, {}) for m in markers.values()), markers


# --- 3. re-wrap of 100+ objects without reading their data ------------------------------------------------------

def seed_plain(s3: Any, bucket: str, count: int) -> dict[str, bytes]:
    bodies = {f"r/{i:03d}": os.urandom(i * 37 % 3000) for i in range(count)}
    bodies["r/zz-multipart"] = os.urandom(11 * MiB + 1)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), bodies.items()))
    return bodies


@pytest.mark.parametrize("keyring", ["kms", "aes"])
def test_rewrap_100_objects_reads_no_data(sandbox: SandboxInfo, s3: Any, bucket: str, tmp_path: Path,
                                          keyring: str) -> None:
    bodies = seed_plain(s3, bucket, 100)
    if keyring == "kms":
        key_a, key_b = create_kms_key(sandbox), create_kms_key(sandbox)
        target_a: dict[str, Any] = {"keyring": "kms", "kms_key_id": key_a}
        target_b: dict[str, Any] = {"keyring": "kms", "kms_key_id": key_b}
        source_b: dict[str, Any] = {"source": source_section(sandbox, bucket)}
    else:
        raw_a, raw_b = os.urandom(32), os.urandom(32)
        file_a, file_b = write_key_file(tmp_path, "a.key", raw_a), write_key_file(tmp_path, "b.key", raw_b)
        target_a = {"keyring": "aes", "key_file": str(file_a)}
        target_b = {"keyring": "aes", "key_file": str(file_b), "material_description": {"rotation": "2"}}
        source_b = {"source": source_section(sandbox, bucket), "source.cse": {"aes_key_files": [str(file_a)]}}
    code, _, out = rekey(sandbox, tmp_path, "to-a", {"source": source_section(sandbox, bucket),
                                                     "target": {"mode": "cse", **target_a}})
    assert code == 0, out

    def snapshot() -> dict[str, tuple[str, str, int, dict[str, str]]]:
        with ThreadPoolExecutor(8) as pool:
            return dict(zip(bodies, pool.map(lambda k: fingerprint(s3, bucket, k), bodies), strict=True))

    before = snapshot()
    code, rep, out = rekey(sandbox, tmp_path, "a-to-b", {**source_b, "target": {"mode": "cse", **target_b}})
    assert code == 0, out
    objects = by_key(rep)
    assert set(objects) == set(bodies)
    assert {(o["state"], o["action"], o["bytes_through_client"]) for o in objects.values()} == \
        {("done", "rewrap", 0)}
    assert rep["summary"]["bytes_through_client"] == 0
    after = snapshot()
    for key in bodies:
        (sha_a, etag_a, size_a, meta_a), (sha_b, etag_b, size_b, meta_b) = before[key], after[key]
        assert (sha_b, size_b) == (sha_a, size_a), f"{key}: ciphertext body changed"
        if key != "r/zz-multipart":  # a CopyObject ETag of a multipart object is the whole body's MD5
            assert etag_b == etag_a, key
        assert meta_b["x-amz-i"] == meta_a["x-amz-i"] and meta_b["x-amz-d"] == meta_a["x-amz-d"], key
        assert meta_b["x-amz-3"] != meta_a["x-amz-3"], f"{key}: data key not re-wrapped"
    if keyring == "kms":
        reader = official(sandbox, target_b["kms_key_id"])
        for key, body in bodies.items():
            assert reader.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
    else:
        for key in ("r/000", "r/057", "r/zz-multipart"):
            blob, resp = raw(s3, bucket, key)
            meta = resp["Metadata"]
            assert meta["x-amz-w"] == "02" and json.loads(meta["x-amz-m"]) == {"rotation": "2"}
            edk = base64.b64decode(meta["x-amz-3"])
            with pytest.raises(InvalidTag):  # the old key no longer opens it
                aes_unwrap(raw_a, edk)
            assert v3_decrypt(aes_unwrap(raw_b, edk), meta, blob) == bodies[key], key


# --- 4. RSA keyring, hand-checked, and back to SSE-S3 ------------------------------------------------------------

def test_rsa_keyring_round_trip_hand_checked(sandbox: SandboxInfo, s3: Any, bucket: str, tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_file = tmp_path / "rsa.pub.pem"
    public_file.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    private_file = write_key_file(tmp_path, "rsa.pem", private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    bodies = {"rsa/doc.txt": os.urandom(5000), "rsa/empty": b"", "rsa/big.bin": os.urandom(12 * MiB + 3)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"owner": "qa"})
    # In place, the private key must be at hand to check every wrap (issue 13): a wrong public key alone would
    # leave objects nobody can open.
    code, rep, out = rekey(sandbox, tmp_path, "to-rsa", {
        "source": source_section(sandbox, bucket), "source.cse": {"rsa_private_key_files": [str(private_file)]},
        "target": {"mode": "cse", "keyring": "rsa", "public_key_file": str(public_file),
                   "material_description": {"team": "storage"}}})
    assert code == 0, out
    assert {(o["state"], o["action"]) for o in rep["objects"]} == {("done", "stream")}
    for key, body in bodies.items():
        blob, resp = raw(s3, bucket, key)
        meta = resp["Metadata"]
        assert meta["x-amz-w"] == "22" and json.loads(meta["x-amz-m"]) == {"team": "storage"}, meta
        assert blob != body or not body
        # §4: RSA-OAEP with SHA-1 and MGF1-SHA-1 over len(dk) || dk || "115".
        pseudo = private.decrypt(base64.b64decode(meta["x-amz-3"]), asym_padding.OAEP(
            mgf=asym_padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
        assert pseudo[0] == 32 and len(pseudo) == 1 + 32 + 3 and pseudo[33:] == b"115"
        assert v3_decrypt(pseudo[1:33], meta, blob) == body, key
    code, rep, out = rekey(sandbox, tmp_path, "back", {
        "source": source_section(sandbox, bucket), "source.cse": {"rsa_private_key_files": [str(private_file)]},
        "target": {"mode": "sse-s3", "allow_client_side_decrypt": True}})
    assert code == 0, out
    assert {(o["state"], o["action"], o["source_mode"]) for o in rep["objects"]} == {("done", "stream", "cse")}
    for key, body in bodies.items():
        got_body, got = raw(s3, bucket, key)
        assert got_body == body and got["ServerSideEncryption"] == "AES256", key
        assert got["Metadata"] == {"owner": "qa"}, key
    no_open_uploads(s3, bucket)


# --- 5. tampered objects fail, nothing is written ---------------------------------------------------------------

TAMPERED = {"bad-commitment.bin": "commitment", "swapped-key.bin": "commitment", "flipped.bin": "tag"}


def seed_tampered(info: SandboxInfo, s3: Any, bucket: str, key_id: str, *, flipped: bool) -> None:
    writer = official(info, key_id)
    for key in ("good.bin", "donor.bin", "bad-commitment.bin", "swapped-key.bin"):
        writer.put_object(Bucket=bucket, Key=key, Body=os.urandom(2000), Metadata={"owner": "qa"})
    if flipped:
        writer.put_object(Bucket=bucket, Key="flipped.bin", Body=os.urandom(11 * MiB + 3), Metadata={"owner": "qa"})

    def replace_metadata(key: str, change: Mapping[str, str]) -> None:
        meta = {**s3.head_object(Bucket=bucket, Key=key)["Metadata"], **change}
        s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key}, Metadata=meta,
                       MetadataDirective="REPLACE")

    replace_metadata("bad-commitment.bin", {"x-amz-d": base64.b64encode(os.urandom(28)).decode()})
    replace_metadata("swapped-key.bin", {"x-amz-3": s3.head_object(Bucket=bucket, Key="donor.bin")["Metadata"][
        "x-amz-3"]})
    if flipped:
        blob, resp = raw(s3, bucket, "flipped.bin")
        bad = bytearray(blob)
        bad[len(bad) - 1024 * 1024] ^= 0x10  # in the last part: the tag check fails at the end of the stream
        s3.put_object(Bucket=bucket, Key="flipped.bin", Body=bytes(bad), Metadata=resp["Metadata"])


@pytest.mark.parametrize("placement", ["in-place", "to-bucket"])
@pytest.mark.parametrize("target", ["sse-s3", "cse-rewrap", "cse-v2-stream"])
def test_tampered_objects_fail_and_nothing_is_written(sandbox: SandboxInfo, s3: Any,
                                                      bucket_factory: Callable[..., str], tmp_path: Path,
                                                      target: str, placement: str) -> None:
    src = bucket_factory("tamper")
    key_a, key_b = create_kms_key(sandbox), create_kms_key(sandbox)
    # A re-wrap never reads the ciphertext, so it cannot see a flipped bit (the next decrypt will): not seeded there.
    tampered = {k: v for k, v in TAMPERED.items() if target != "cse-rewrap" or k != "flipped.bin"}
    seed_tampered(sandbox, s3, src, key_a, flipped="flipped.bin" in tampered)
    before = {k: fingerprint(s3, src, k) for k in list_keys(s3, src)}
    sections: dict[str, Any] = {"source": source_section(sandbox, src)}
    dst = None
    if placement == "to-bucket":
        dst = bucket_factory("tamper-dst")
        sections["destination"] = {"bucket": dst}
    sections["target"] = {
        "sse-s3": {"mode": "sse-s3", "allow_client_side_decrypt": True},
        "cse-rewrap": {"mode": "cse", "keyring": "kms", "kms_key_id": key_b},
        "cse-v2-stream": {"mode": "cse", "keyring": "kms", "kms_key_id": key_b, "format": "v2"},
    }[target]
    code, rep, out = rekey(sandbox, tmp_path, "tamper", sections)
    assert code == 1, out
    objects = by_key(rep)
    assert objects["good.bin"]["state"] == "done" and objects["donor.bin"]["state"] == "done", objects
    for key, reason in tampered.items():
        entry = objects[key]
        assert entry["state"] == "failed", entry
        assert entry["source_mode"] == "cse", entry   # as found: client-side, tampered or not
        assert entry["action"] != "skip", entry
        assert reason in (entry["error"] or "").lower(), entry
        assert fingerprint(s3, src, key) == before[key], f"{key}: source changed"
    if dst is not None:
        assert list_keys(s3, dst) == ["donor.bin", "good.bin"], "a tampered object reached the destination"
        assert list_keys(s3, src) == sorted(before)
        assert all(fingerprint(s3, src, k) == v for k, v in before.items())
    no_open_uploads(s3, src, *([dst] if dst else []))
    assert checkpoint_rows(tmp_path / "tamper.sqlite", "SELECT upload_id FROM uploads") == []


# --- 6. SIGKILL while streaming multipart objects into client-side encryption ------------------------------------

def uploads_recorded(checkpoint: Path) -> int:
    """Multipart uploads the checkpoint knows by id (a row with an empty id is only the intent to create one)."""
    if not checkpoint.exists():
        return 0
    try:
        return int(checkpoint_rows(checkpoint, "SELECT count(*) FROM uploads WHERE upload_id != ''")[0][0])
    except sqlite3.Error:  # created, schema not there yet
        return 0


def test_sigkill_mid_cse_stream_then_resume(sandbox: SandboxInfo, s3: Any, bucket: str, kms_key: str,
                                            tmp_path: Path) -> None:
    bodies = {f"big-{i}.bin": os.urandom(11 * MiB + i * 300_001) for i in range(6)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"n": key})
    checkpoint = tmp_path / "kill.sqlite"
    config = write_config(tmp_path, {
        "source": source_section(sandbox, bucket),
        "target": {"mode": "cse", "keyring": "kms", "kms_key_id": kms_key},
        "kms": {"endpoint_url": sandbox.kms_url, "region": sandbox.region},
        "run": small_run_section(checkpoint, concurrency=3)}, name="kill.toml")
    proc = popen_rekey(sandbox, "run", "-q", "-c", str(config))
    deadline = time.monotonic() + 60
    while uploads_recorded(checkpoint) == 0:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before a client-side upload was recorded:\n"
                        f"{out.decode()}\n{err.decode()}")
        assert time.monotonic() < deadline, "no multipart upload recorded within 60 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    journaled = {r["upload_id"]: r["key"] for r in checkpoint_rows(checkpoint, "SELECT key, upload_id FROM uploads")}
    on_server = {u["UploadId"]: u["Key"] for u in open_uploads(s3, bucket)}
    assert journaled and on_server, "killed with no upload open: the test proves nothing"

    result = run_rekey(sandbox, "run", "-q", "-c", str(config), "--report", str(tmp_path / "kill.json"))
    assert result.returncode == 0, result.describe()
    objects = by_key(load_report(tmp_path / "kill.json"))
    assert set(objects) == set(bodies)
    # Done now, or found already encrypted under the target (written by the killed run but not yet recorded).
    assert {(o["state"], o["action"]) for o in objects.values()} <= {("done", "stream"), ("skipped", "skip")}, objects
    reader = official(sandbox, kms_key)
    for key, body in bodies.items():
        assert reader.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
        assert s3.head_object(Bucket=bucket, Key=key)["Metadata"]["n"] == key
    left = {u["UploadId"]: u["Key"] for u in open_uploads(s3, bucket)}
    assert not left, (f"multipart uploads left behind: {left}; open on the server at the kill: {on_server}; "
                      f"recorded in the checkpoint at the kill: {journaled}")
    assert checkpoint_rows(checkpoint, "SELECT upload_id FROM uploads") == []
    assert list_keys(s3, bucket) == sorted(bodies)
