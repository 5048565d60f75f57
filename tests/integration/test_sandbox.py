"""The sandbox is a usable S3 + KMS: each encryption mode, access control, data kept across a restart."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from engine.sandbox import Sandbox, SandboxInfo
from tests.helpers import ObjectSpec, put_objects, read_back, s3_client, sse_c_params


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response: Any = exc.value.response
    return str(response["Error"]["Code"]), int(response["ResponseMetadata"]["HTTPStatusCode"])


def stored_bytes_contain(info: SandboxInfo, marker: bytes) -> bool:
    """Whether `marker` appears in any file SeaweedFS keeps on disk."""
    return any(
        marker in path.read_bytes() for path in Path(info.workdir, "data").rglob("*") if path.is_file()
    )


def test_sse_s3_reported_as_aes256_and_not_stored_in_clear(
    sandbox: SandboxInfo, s3: Any, bucket: str
) -> None:
    secret, control = b"secret-" + os.urandom(12).hex().encode(), b"control-" + os.urandom(12).hex().encode()
    s3.put_object(Bucket=bucket, Key="a.txt", Body=secret, ServerSideEncryption="AES256")
    s3.put_object(Bucket=bucket, Key="plain.txt", Body=control)

    head = s3.head_object(Bucket=bucket, Key="a.txt")

    assert head["ServerSideEncryption"] == "AES256"
    assert read_back(s3, bucket, "a.txt") == secret
    assert stored_bytes_contain(sandbox, control)  # the scan does see unencrypted data...
    assert not stored_bytes_contain(sandbox, secret)  # ...and SSE-S3 data is not in it


def test_sse_kms_reports_the_moto_key(s3: Any, bucket: str, kms: Any, kms_key: str) -> None:
    key_arn = kms.describe_key(KeyId=kms_key)["KeyMetadata"]["Arn"]
    s3.put_object(
        Bucket=bucket, Key="k.bin", Body=b"hello sse-kms", ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key
    )

    head = s3.head_object(Bucket=bucket, Key="k.bin")

    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] in (kms_key, key_arn)
    assert read_back(s3, bucket, "k.bin") == b"hello sse-kms"


def test_sse_kms_with_unknown_key_is_refused(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError):
        s3.put_object(
            Bucket=bucket, Key="k.bin", Body=b"x", ServerSideEncryption="aws:kms",
            SSEKMSKeyId="00000000-0000-0000-0000-000000000000",
        )


def test_sse_c_round_trips_over_https_and_needs_the_key(s3: Any, bucket: str) -> None:
    key = os.urandom(32)
    s3.put_object(Bucket=bucket, Key="c.bin", Body=b"hello sse-c", **sse_c_params(key))

    head = s3.head_object(Bucket=bucket, Key="c.bin", **sse_c_params(key))
    assert head["SSECustomerAlgorithm"] == "AES256"
    assert read_back(s3, bucket, "c.bin", sse_c_key=key) == b"hello sse-c"

    with pytest.raises(ClientError) as without_key:
        s3.get_object(Bucket=bucket, Key="c.bin")
    assert error_code(without_key)[1] == 400

    with pytest.raises(ClientError) as wrong_key:
        read_back(s3, bucket, "c.bin", sse_c_key=os.urandom(32))
    assert error_code(wrong_key)[1] == 403


def test_limited_identity_reads_but_cannot_write(sandbox: SandboxInfo, s3: Any, bucket: str) -> None:
    put_objects(s3, bucket, [ObjectSpec("r.txt", b"readable")])
    limited = s3_client(sandbox, https=True, limited=True)

    assert read_back(limited, bucket, "r.txt") == b"readable"
    assert [o["Key"] for o in limited.list_objects_v2(Bucket=bucket)["Contents"]] == ["r.txt"]
    with pytest.raises(ClientError) as denied:
        limited.put_object(Bucket=bucket, Key="w.txt", Body=b"nope")
    assert error_code(denied) == ("AccessDenied", 403)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="w.txt")


def test_write_to_missing_bucket_fails_like_aws(s3: Any) -> None:
    with pytest.raises(ClientError) as missing:
        s3.put_object(Bucket="rekey-no-such-bucket-7f3a", Key="x", Body=b"x")
    assert error_code(missing)[0] == "NoSuchBucket"


def test_plain_http_endpoint_serves_the_same_data(s3: Any, s3_http: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="h.txt", Body=b"both ways", ServerSideEncryption="AES256")

    assert read_back(s3_http, bucket, "h.txt") == b"both ways"


def test_restart_keeps_sse_s3_and_sse_kms_objects_readable(
    sandbox_handle: Sandbox, s3: Any, bucket: str, kms_key: str
) -> None:
    put_objects(s3, bucket, [
        ObjectSpec("s3.bin", b"sse-s3 survives", {"ServerSideEncryption": "AES256"}),
        ObjectSpec("kms.bin", b"sse-kms survives",
                   {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}),
    ])

    sandbox_handle.stop_s3()
    port = urlsplit(sandbox_handle.info.s3_http).port
    with pytest.raises(ConnectionRefusedError):  # really down, not just pretending
        socket.create_connection(("127.0.0.1", port or 80), timeout=2).close()
    sandbox_handle.start_s3()

    assert read_back(s3, bucket, "s3.bin") == b"sse-s3 survives"
    assert read_back(s3, bucket, "kms.bin") == b"sse-kms survives"
    assert s3.head_object(Bucket=bucket, Key="kms.bin")["ServerSideEncryption"] == "aws:kms"


def test_restart_of_kms_and_s3_keeps_sse_kms_objects_readable(sandbox_handle: Sandbox, s3: Any, bucket: str,
                                                              kms_key: str) -> None:
    """moto keeps keys in memory: the sandbox keeps them in its workdir (0600), so a restart of both servers
    (as `rekey sandbox --workdir` does) finds them."""
    s3.put_object(Bucket=bucket, Key="kms.bin", Body=b"kms survives", ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=kms_key)
    kms_url = sandbox_handle.info.kms_url
    sandbox_handle.stop_s3()
    sandbox_handle.stop_kms()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", urlsplit(kms_url).port or 80), timeout=2).close()
    sandbox_handle.start_kms()
    sandbox_handle.start_s3()
    assert read_back(s3, bucket, "kms.bin") == b"kms survives"
    state = Path(sandbox_handle.info.workdir, "kms-keys.json")
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert kms_key in state.read_text()


def test_kept_workdir_keeps_credentials_and_kms_port(tmp_path: Path) -> None:
    from engine.sandbox import IDENTITY_FILE, _identity
    first = _identity(tmp_path, 0, keep=True)
    second = _identity(tmp_path, 0, keep=True)
    assert first == second and first["kms_port"] > 0
    assert stat.S_IMODE((tmp_path / IDENTITY_FILE).stat().st_mode) == 0o600
    assert _identity(tmp_path / "other", 0, keep=False)["access_key"] != first["access_key"]
