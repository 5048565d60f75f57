"""Each real S3 server of the suite applies exactly the target modes the `server` fixture says it does."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tests.helpers import S3Server, read_back, sse_c_params

MODES = ("sse-s3", "sse-kms", "sse-c")


def write_params(server: S3Server, mode: str, sse_c_key: bytes) -> dict[str, Any]:
    if mode == "sse-s3":
        return {"ServerSideEncryption": "AES256"}
    if mode == "sse-kms":
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": server.kms_a}
    return sse_c_params(sse_c_key)


def reported_mode(head: dict[str, Any]) -> str:
    if head.get("SSECustomerAlgorithm"):
        return "sse-c"
    return {"AES256": "sse-s3", "aws:kms": "sse-kms"}.get(str(head.get("ServerSideEncryption")), "none")


def test_server_applies_what_the_fixture_claims(server: S3Server,
                                                server_bucket_factory: Callable[..., str]) -> None:
    bucket = server_bucket_factory("applies")
    body, sse_c_key = os.urandom(2048), os.urandom(32)
    applied = set()
    for mode in MODES:
        server.s3.put_object(Bucket=bucket, Key=mode, Body=body, **write_params(server, mode, sse_c_key))
        read_key = sse_c_key if mode == "sse-c" else None
        head = server.s3.head_object(Bucket=bucket, Key=mode, **(sse_c_params(read_key) if read_key else {}))
        if reported_mode(head) == mode:
            applied.add(mode)
        assert read_back(server.s3, bucket, mode, read_key) == body
    assert applied == set(server.applies), f"{server.name} applies {sorted(applied)}"
