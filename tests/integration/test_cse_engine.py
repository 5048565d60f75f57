"""Client-side encryption through the engine, against SeaweedFS, read back by AWS's official S3 Encryption Client."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA512
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from s3_encryption import S3EncryptionClient, S3EncryptionClientConfig
from s3_encryption.materials.kms_keyring import KmsKeyring as OfficialKmsKeyring
from s3_encryption.materials.materials import CommitmentPolicy

from engine.sandbox import SandboxInfo
from tests.helpers import kms_client, s3_client

MiB = 1024 * 1024


def official(info: SandboxInfo, key_id: str, *, allow_v2: bool = False) -> S3EncryptionClient:
    """The official client on its own boto3 client (it registers hooks on the client it wraps)."""
    kms = kms_client(info)
    arn = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    policy = CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT if allow_v2 else \
        CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    return S3EncryptionClient(s3_client(info), S3EncryptionClientConfig(keyring=OfficialKmsKeyring(kms, arn),
                                                           commitment_policy=policy))


def verify_deep(info: SandboxInfo, tmp: Path, name: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "engine.launch", "verify", "--deep", "-c", str(tmp / f"{name}.toml")],
                          env={**os.environ, **info.env()}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def run_rekey(info: SandboxInfo, tmp: Path, name: str, body: str, *args: str) -> tuple[int, dict[str, Any], str]:
    cfg = tmp / f"{name}.toml"
    cfg.write_text(body + f'\n[kms]\nendpoint_url = "{info.kms_url}"\nregion = "us-east-1"\n'
                   f'[run]\ncheckpoint = "{tmp / (name + ".sqlite")}"\npart_size = "5MiB"\n'
                   'multipart_threshold = "5MiB"\nconcurrency = 8\n')
    report = tmp / f"{name}.json"
    proc = subprocess.run([sys.executable, "-m", "engine.launch", "run", "-q", "-c", str(cfg), "--report", str(report),
                           *args], env={**os.environ, **info.env()}, capture_output=True, text=True, timeout=300)
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, data, proc.stdout + proc.stderr


def source(info: SandboxInfo, bucket: str) -> str:
    return (f'[source]\nbucket = "{bucket}"\nendpoint_url = "{info.s3_https}"\nca_bundle = "{info.ca_bundle}"\n'
            'region = "us-east-1"\n')


BODIES = {"empty.bin": b"", "small.txt": b"hello client-side world\n" * 37,
          "multi.bin": os.urandom(12 * MiB + 12345)}


@pytest.fixture
def kms_key_factory(sandbox: SandboxInfo) -> Any:
    kms = kms_client(sandbox)
    return lambda: kms.create_key(Description="rekey cse test")["KeyMetadata"]["KeyId"]


@pytest.fixture
def seeded(s3: Any, bucket: str) -> str:
    for key, body in BODIES.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/x-test", Metadata={"owner": "qa"},
                      Tagging="team=storage")
    return bucket


def test_plaintext_to_cse_kms_then_rewrap_then_back(sandbox: SandboxInfo, s3: Any, seeded: str,
                                                    kms_key_factory: Any, tmp_path: Path) -> None:
    key_a, key_b = kms_key_factory(), kms_key_factory()
    # 1. plaintext -> client-side V3 under KMS key A, in place
    code, rep, out = run_rekey(sandbox, tmp_path, "to-cse", source(sandbox, seeded) +
                               f'[target]\nmode = "cse"\nkeyring = "kms"\nkms_key_id = "{key_a}"\n'
                               'encryption_context = { project = "rekey" }\n')
    assert code == 0, out
    assert {o["state"] for o in rep["objects"]} == {"done"}
    client = official(sandbox, key_a)
    for key, body in BODIES.items():
        got = client.get_object(Bucket=seeded, Key=key, EncryptionContext={"project": "rekey"})
        assert got["Body"].read() == body
        raw = s3.head_object(Bucket=seeded, Key=key)
        assert raw["Metadata"]["owner"] == "qa" and raw["ContentType"] == "text/x-test"
        assert "x-amz-3" in raw["Metadata"]
        assert s3.get_object_tagging(Bucket=seeded, Key=key)["TagSet"] == [{"Key": "team", "Value": "storage"}]
    # verify --deep decrypts every object and matches the plaintext SHA-256 recorded while encrypting
    assert "0 mismatch(es); sha256 3" in verify_deep(sandbox, tmp_path, "to-cse")
    # the same config again: every object is already right
    code, rep, out = run_rekey(sandbox, tmp_path, "to-cse-again", source(sandbox, seeded) +
                               f'[target]\nmode = "cse"\nkeyring = "kms"\nkms_key_id = "{key_a}"\n'
                               'encryption_context = { project = "rekey" }\n')
    assert code == 0, out
    assert {o["action"] for o in rep["objects"]} == {"skip"}
    # 2. re-wrap A -> B: no object data crosses the client
    code, rep, out = run_rekey(sandbox, tmp_path, "rewrap", source(sandbox, seeded) +
                               f'[target]\nmode = "cse"\nkeyring = "kms"\nkms_key_id = "{key_b}"\n'
                               'encryption_context = { project = "rekey" }\n')
    assert code == 0, out
    assert {o["action"] for o in rep["objects"]} == {"rewrap"}
    assert rep["summary"]["bytes_through_client"] == 0
    assert "0 mismatch(es); tag 3" in verify_deep(sandbox, tmp_path, "rewrap")
    client_b = official(sandbox, key_b)
    for key, body in BODIES.items():
        assert client_b.get_object(Bucket=seeded, Key=key, EncryptionContext={"project": "rekey"})[
            "Body"].read() == body
    # 3. client-side -> SSE-KMS needs the explicit switch
    target = f'[target]\nmode = "sse-kms"\nkms_key_id = "{key_a}"\n'
    code, rep, out = run_rekey(sandbox, tmp_path, "refused", source(sandbox, seeded) + target)
    assert code == 0, out
    assert {o["action"] for o in rep["objects"]} == {"refuse"}
    assert "allow_client_side_decrypt" in rep["objects"][0]["error"]
    code, rep, out = run_rekey(sandbox, tmp_path, "decrypt", source(sandbox, seeded) + target +
                               "allow_client_side_decrypt = true\n")
    assert code == 0, out
    for key, body in BODIES.items():
        got = s3.get_object(Bucket=seeded, Key=key)
        assert got["ServerSideEncryption"] == "aws:kms" and got["Body"].read() == body
        assert "x-amz-3" not in got["Metadata"] and got["Metadata"]["owner"] == "qa"


def test_aes_keyring_hand_checked_and_tamper(sandbox: SandboxInfo, s3: Any, bucket: str, tmp_path: Path) -> None:
    wrap_key = os.urandom(32)
    (tmp_path / "wrap.key").write_bytes(base64.b64encode(wrap_key))
    (tmp_path / "wrap.key").chmod(0o600)
    body = os.urandom(7 * MiB + 3)
    s3.put_object(Bucket=bucket, Key="doc.bin", Body=body)
    s3.put_object(Bucket=bucket, Key="victim.bin", Body=b"tamper me" * 1000)
    code, rep, out = run_rekey(sandbox, tmp_path, "aes", source(sandbox, bucket) +
                               f'[target]\nmode = "cse"\nkeyring = "aes"\nkey_file = "{tmp_path / "wrap.key"}"\n')
    assert code == 0, out
    # Decrypt step by step with cryptography alone (V3: HKDF-SHA512, AES-GCM IV 01x12, AAD 00 73).
    obj = s3.get_object(Bucket=bucket, Key="doc.bin")
    meta, blob = obj["Metadata"], obj["Body"].read()
    assert meta["x-amz-w"] == "02" and meta["x-amz-c"] == "115"
    edk = base64.b64decode(meta["x-amz-3"])
    data_key = AESGCM(wrap_key).decrypt(edk[:12], edk[12:], b"115")
    message_id = base64.b64decode(meta["x-amz-i"])
    import hmac
    prk = hmac.new(message_id, data_key, hashlib.sha512).digest()
    dek = HKDFExpand(SHA512(), 32, b"\x00\x73DERIVEKEY").derive(prk)
    commit = HKDFExpand(SHA512(), 28, b"\x00\x73COMMITKEY").derive(prk)
    assert base64.b64decode(meta["x-amz-d"]) == commit
    assert AESGCM(dek).decrypt(b"\x01" * 12, blob, b"\x00\x73") == body
    # Tamper with one object's ciphertext, then migrate to SSE-S3: it fails as corrupt, nothing is written.
    victim = s3.get_object(Bucket=bucket, Key="victim.bin")
    bad = bytearray(victim["Body"].read())
    bad[5] ^= 1
    s3.put_object(Bucket=bucket, Key="victim.bin", Body=bytes(bad), Metadata=victim["Metadata"])
    before = s3.head_object(Bucket=bucket, Key="victim.bin")["ETag"]
    code, rep, out = run_rekey(sandbox, tmp_path, "aes-out", source(sandbox, bucket) +
                               f'[source.cse]\naes_key_files = ["{tmp_path / "wrap.key"}"]\n'
                               '[target]\nmode = "sse-s3"\nallow_client_side_decrypt = true\n')
    assert code == 1, out
    states = {o["key"]: (o["state"], o["error"]) for o in rep["objects"]}
    assert states["doc.bin"][0] == "done"
    assert states["victim.bin"][0] == "failed" and "tag" in states["victim.bin"][1]
    assert s3.head_object(Bucket=bucket, Key="victim.bin")["ETag"] == before
    assert s3.get_object(Bucket=bucket, Key="doc.bin")["Body"].read() == body
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    for blob_file in tmp_path.glob("aes*"):
        data = blob_file.read_bytes()
        assert wrap_key not in data and base64.b64encode(wrap_key) not in data
