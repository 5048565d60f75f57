"""Interoperability of rekey's S3EC format with the official Python S3 Encryption Client 4.0, on moto.

(a) objects rekey encrypts (V2/V3, KMS keyring, with and without context, inline or instruction file)
decrypt with the official client; (b) objects the official client writes (V3 single PUT and multipart, V2)
decrypt with rekey's code.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import anyio
import boto3
import pytest
from moto.server import ThreadedMotoServer
from s3_encryption import S3EncryptionClient, S3EncryptionClientConfig
from s3_encryption.materials.kms_keyring import KmsKeyring as OfficialKmsKeyring
from s3_encryption.materials.materials import AlgorithmSuite, CommitmentPolicy

from workers.cse import (
    INSTRUCTION_SUFFIX,
    ContentDecryptor,
    ContentEncryptor,
    CseFormat,
    KmsKeyring,
    WrapAlg,
    detect_format,
    dump_instruction_file,
    envelope_to_metadata,
    instruction_object_metadata,
    needs_instruction_file,
    new_data_key,
    parse_envelope,
)
from workers.errors import AccessDeniedError, CorruptObjectError, WrongKeyError
from workers.s3 import Endpoint, Kms

REGION = "us-east-1"
BUCKET = "interop"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "NO_PROXY": "127.0.0.1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clients(moto_url: str, aws_env: None) -> tuple[Any, Any, str]:
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name=REGION)
    kms = boto3.client("kms", endpoint_url=moto_url, region_name=REGION)
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    key_arn = kms.create_key(Description="rekey interop")["KeyMetadata"]["Arn"]
    return s3, kms, key_arn


def _official(s3_url: str, key_arn: str, *, v2_writer: bool = False) -> Any:
    """An official client on its own boto3 S3 client (it installs hooks on the client it wraps)."""
    s3 = boto3.client("s3", endpoint_url=s3_url, region_name=REGION)
    kms = boto3.client("kms", endpoint_url=s3_url, region_name=REGION)
    if v2_writer:
        config = S3EncryptionClientConfig(
            keyring=OfficialKmsKeyring(kms, key_arn),
            encryption_algorithm=AlgorithmSuite.ALG_AES_256_GCM_IV12_TAG16_NO_KDF,
            commitment_policy=CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT)
    else:
        config = S3EncryptionClientConfig(keyring=OfficialKmsKeyring(kms, key_arn),
                                          commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT)
    return S3EncryptionClient(s3, config)


def _kms_run(moto_url: str, fn: Any) -> Any:
    """Run `fn(kms)` with rekey's own aiobotocore KMS client."""
    async def main() -> Any:
        async with Kms.open(Endpoint(endpoint_url=moto_url, region=REGION)) as kms:
            return await fn(kms)
    return anyio.run(main)


def _rekey_encrypt(moto_url: str, key_arn: str, plaintext: bytes, fmt: CseFormat,
                   context: Mapping[str, str] | None, *, chunk: int = 65536) -> tuple[bytes, Any]:
    async def encrypt(kms: Any) -> tuple[bytes, Any]:
        keyring = KmsKeyring(kms, key_arn, context)
        data_key = new_data_key()
        enc = ContentEncryptor(data_key, fmt)
        body = b"".join(enc.update(plaintext[i:i + chunk]) for i in range(0, len(plaintext), chunk))
        body += enc.finalize()
        return body, enc.envelope(await keyring.wrap(data_key, fmt))
    result: tuple[bytes, Any] = _kms_run(moto_url, encrypt)
    return result


def _rekey_decrypt(moto_url: str, key_arn: str, metadata: Mapping[str, str], body: bytes,
                   context: Mapping[str, str] | None, instruction: Mapping[str, str] | None = None) -> bytes:
    env = parse_envelope(metadata, instruction)

    async def decrypt(kms: Any) -> bytes:
        data_key = await KmsKeyring(kms, key_arn, context).unwrap(env)
        dec = ContentDecryptor.for_envelope(data_key, env)
        out = b"".join(dec.update(body[i:i + 10_000]) for i in range(0, len(body), 10_000))
        return out + dec.finalize()
    result: bytes = _kms_run(moto_url, decrypt)
    return result


# --- (a) rekey writes, the official client reads ------------------------------------------------------------

@pytest.mark.parametrize("fmt", [CseFormat.V3, CseFormat.V2])
@pytest.mark.parametrize("context", [None, {"tenant": "acme", "purpose": "interop"}], ids=["no-ctx", "ctx"])
@pytest.mark.parametrize("size", [0, 1, 300_001])
@pytest.mark.parametrize("instruction_file", [False, True], ids=["inline", "instruction-file"])
def test_rekey_written_object_decrypts_with_official_client(
        clients: tuple[Any, Any, str], moto_url: str, fmt: CseFormat, context: dict[str, str] | None,
        size: int, instruction_file: bool) -> None:
    s3, _, key_arn = clients
    plaintext = os.urandom(size)
    body, env = _rekey_encrypt(moto_url, key_arn, plaintext, fmt, context)
    obj_md, ins = envelope_to_metadata(env, instruction_file=instruction_file)
    key = f"rekey-{fmt}-{size}-{bool(context)}-{instruction_file}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata={**obj_md, "user-key": "kept"})
    if ins is not None:
        s3.put_object(Bucket=BUCKET, Key=key + INSTRUCTION_SUFFIX, Body=dump_instruction_file(ins),
                      Metadata=instruction_object_metadata())
    official = _official(moto_url, key_arn)
    got = official.get_object(Bucket=BUCKET, Key=key, EncryptionContext=context or {})
    assert got["Body"].read() == plaintext
    # And rekey reads back what it wrote, through S3 (metadata keys as boto returns them).
    raw = s3.get_object(Bucket=BUCKET, Key=key)
    instruction = None
    if instruction_file:
        instruction = json.loads(s3.get_object(Bucket=BUCKET, Key=key + INSTRUCTION_SUFFIX)["Body"].read())
    assert _rekey_decrypt(moto_url, key_arn, raw["Metadata"], raw["Body"].read(), context,
                          instruction) == plaintext


def test_official_client_enforces_rekey_context(clients: tuple[Any, Any, str], moto_url: str) -> None:
    """The context rekey stores is the one readers check: a wrong expected context is refused by both."""
    s3, _, key_arn = clients
    body, env = _rekey_encrypt(moto_url, key_arn, b"ctx", CseFormat.V3, {"tenant": "acme"})
    metadata, _ = envelope_to_metadata(env, instruction_file=False)
    s3.put_object(Bucket=BUCKET, Key="ctx", Body=body, Metadata=metadata)
    official = _official(moto_url, key_arn)
    with pytest.raises(Exception, match="encryption context does not match"):
        official.get_object(Bucket=BUCKET, Key="ctx", EncryptionContext={"tenant": "evil"})
    raw = s3.get_object(Bucket=BUCKET, Key="ctx")
    with pytest.raises(WrongKeyError):
        _rekey_decrypt(moto_url, key_arn, raw["Metadata"], raw["Body"].read(), {"tenant": "evil"})


# --- (b) the official client writes, rekey reads ------------------------------------------------------------

@pytest.mark.parametrize("context", [None, {"tenant": "acme"}], ids=["no-ctx", "ctx"])
@pytest.mark.parametrize("size", [0, 12_345])
def test_official_v3_put_decrypts_with_rekey(clients: tuple[Any, Any, str], moto_url: str,
                                             context: dict[str, str] | None, size: int) -> None:
    s3, _, key_arn = clients
    plaintext = os.urandom(size)
    key = f"official-v3-{size}-{bool(context)}"
    kwargs: dict[str, Any] = {"EncryptionContext": context} if context else {}
    _official(moto_url, key_arn).put_object(Bucket=BUCKET, Key=key, Body=plaintext, **kwargs)
    raw = s3.get_object(Bucket=BUCKET, Key=key)
    md = raw["Metadata"]
    assert detect_format(md) is CseFormat.V3
    assert set(md) == {"x-amz-c", "x-amz-3", "x-amz-w", "x-amz-d", "x-amz-i", "x-amz-t"}
    env = parse_envelope(md)
    assert env.wrap_alg is WrapAlg.KMS_CONTEXT
    assert dict(env.description) == {**(context or {}), "aws:x-amz-cek-alg": "115"}
    assert _rekey_decrypt(moto_url, key_arn, md, raw["Body"].read(), context) == plaintext


def test_official_v3_multipart_decrypts_with_rekey(clients: tuple[Any, Any, str], moto_url: str) -> None:
    s3, _, key_arn = clients
    official = _official(moto_url, key_arn)
    parts_plain = [os.urandom(5 * 1024 * 1024), os.urandom(5 * 1024 * 1024), os.urandom(777)]
    upload = official.create_multipart_upload(Bucket=BUCKET, Key="official-mpu",
                                              EncryptionContext={"job": "mpu"})
    parts = []
    for number, data in enumerate(parts_plain, start=1):
        resp = official.upload_part(Bucket=BUCKET, Key="official-mpu", UploadId=upload["UploadId"],
                                    PartNumber=number, Body=data, IsLastPart=number == len(parts_plain))
        parts.append({"PartNumber": number, "ETag": resp["ETag"]})
    official.complete_multipart_upload(Bucket=BUCKET, Key="official-mpu", UploadId=upload["UploadId"],
                                       MultipartUpload={"Parts": parts})
    raw = s3.get_object(Bucket=BUCKET, Key="official-mpu")
    body = raw["Body"].read()
    assert len(body) == sum(map(len, parts_plain)) + 16
    assert _rekey_decrypt(moto_url, key_arn, raw["Metadata"], body, {"job": "mpu"}) == b"".join(parts_plain)


@pytest.mark.parametrize("context", [None, {"tenant": "acme"}], ids=["no-ctx", "ctx"])
def test_official_v2_put_decrypts_with_rekey(clients: tuple[Any, Any, str], moto_url: str,
                                             context: dict[str, str] | None) -> None:
    s3, _, key_arn = clients
    plaintext = os.urandom(4321)
    kwargs: dict[str, Any] = {"EncryptionContext": context} if context else {}
    _official(moto_url, key_arn, v2_writer=True).put_object(Bucket=BUCKET, Key="official-v2", Body=plaintext,
                                                            **kwargs)
    raw = s3.get_object(Bucket=BUCKET, Key="official-v2")
    md = raw["Metadata"]
    assert detect_format(md) is CseFormat.V2
    assert set(md) == {"x-amz-key-v2", "x-amz-iv", "x-amz-matdesc", "x-amz-wrap-alg", "x-amz-cek-alg",
                       "x-amz-tag-len"}
    assert md["x-amz-tag-len"] == "128" and md["x-amz-wrap-alg"] == "kms+context"
    assert _rekey_decrypt(moto_url, key_arn, md, raw["Body"].read(), context) == plaintext


def test_official_reads_v3_instruction_file_only_with_cdi_on_object(clients: tuple[Any, Any, str],
                                                                   moto_url: str) -> None:
    """§6: V3 keeps x-amz-c/d/i on the object; with them in the file the official client refuses."""
    s3, _, key_arn = clients
    body, env = _rekey_encrypt(moto_url, key_arn, b"placement", CseFormat.V3, None)
    obj_md, ins = envelope_to_metadata(env, instruction_file=True)
    assert ins is not None and needs_instruction_file(obj_md)
    s3.put_object(Bucket=BUCKET, Key="misplaced", Body=body, Metadata={})
    s3.put_object(Bucket=BUCKET, Key="misplaced" + INSTRUCTION_SUFFIX,
                  Body=dump_instruction_file({**ins, **obj_md}), Metadata=instruction_object_metadata())
    with pytest.raises(Exception, match="Instruction file is tampered"):
        _official(moto_url, key_arn).get_object(Bucket=BUCKET, Key="misplaced")
    with pytest.raises(CorruptObjectError, match="object-only keys"):
        parse_envelope({}, {**ins, **obj_md})


def test_other_kms_key_is_wrong_key(clients: tuple[Any, Any, str], moto_url: str) -> None:
    _, kms, key_arn = clients
    other_arn = kms.create_key(Description="another key")["KeyMetadata"]["Arn"]
    _, env = _rekey_encrypt(moto_url, key_arn, b"x", CseFormat.V3, None)

    async def unwrap(client: Any) -> Any:
        return await KmsKeyring(client, other_arn).unwrap(env)
    # AWS answers IncorrectKeyException (mapped to WrongKeyError, see the unit tests); moto answers
    # AccessDeniedException, which the shared classifier makes fatal. Pin moto's behaviour so a change shows.
    with pytest.raises(AccessDeniedError, match="AccessDeniedException"):
        _kms_run(moto_url, unwrap)

