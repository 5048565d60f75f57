"""The RGW sandbox is a usable S3 server: SSE-KMS with its test keys, SSE-C enforced, TLS required for SSE."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.sandbox_rgw import RgwInfo
from tests.helpers import read_back, s3_client, sse_c_params


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response: Any = exc.value.response
    return str(response["Error"]["Code"]), int(response["ResponseMetadata"]["HTTPStatusCode"])


def test_rgw_serves_sse_kms_and_sse_c_over_https(rgw: RgwInfo, rgw_s3: Any,
                                                  rgw_bucket_factory: Callable[..., str]) -> None:
    bucket = rgw_bucket_factory("rgw-sandbox")
    body, key = os.urandom(4096), os.urandom(32)
    rgw_s3.put_object(Bucket=bucket, Key="kms", Body=body, ServerSideEncryption="aws:kms",
                      SSEKMSKeyId=rgw.kms_keys[0])
    rgw_s3.put_object(Bucket=bucket, Key="ssec", Body=body, **sse_c_params(key))

    head = rgw_s3.head_object(Bucket=bucket, Key="kms")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", rgw.kms_keys[0])
    assert read_back(rgw_s3, bucket, "kms") == body
    assert read_back(rgw_s3, bucket, "ssec", key) == body
    with pytest.raises(ClientError) as no_key:
        rgw_s3.get_object(Bucket=bucket, Key="ssec")
    assert error_of(no_key)[1] == 400


def test_rgw_refuses_encryption_over_plain_http(rgw: RgwInfo, rgw_bucket_factory: Callable[..., str]) -> None:
    bucket = rgw_bucket_factory("rgw-http")
    plain = s3_client(rgw, https=False)
    plain.put_object(Bucket=bucket, Key="plain", Body=b"ok")  # no encryption header: accepted
    with pytest.raises(ClientError) as refused:
        plain.put_object(Bucket=bucket, Key="kms", Body=b"x", ServerSideEncryption="aws:kms",
                         SSEKMSKeyId=rgw.kms_keys[0])
    assert error_of(refused) == ("InvalidRequest", 400)


def test_rgw_unknown_kms_key_is_refused(rgw: RgwInfo, rgw_s3: Any, rgw_bucket_factory: Callable[..., str]) -> None:
    bucket = rgw_bucket_factory("rgw-kms")
    with pytest.raises(ClientError) as refused:
        rgw_s3.put_object(Bucket=bucket, Key="k", Body=b"x", ServerSideEncryption="aws:kms",
                          SSEKMSKeyId="no-such-key")
    assert error_of(refused)[1] in (400, 403)
