"""Small helpers shared by tests: boto3 clients for the sandbox, fresh names, writing and reading objects."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from engine.sandbox import SandboxInfo


def client_config() -> Config:
    """Path-style addressing, checksums only when required (as the engine sends them), no proxies."""
    return Config(
        region_name="us-east-1",
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "total_max_attempts": 3},
        proxies={},
    )


def s3_client(info: SandboxInfo, *, https: bool = True, limited: bool = False) -> Any:
    """A boto3 S3 client for the sandbox, as the admin identity unless `limited`."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=info.s3_https if https else info.s3_http,
        verify=info.ca_bundle if https else None,
        aws_access_key_id=info.limited_access_key if limited else info.access_key,
        aws_secret_access_key=info.limited_secret_key if limited else info.secret_key,
        region_name=info.region,
        config=client_config(),
    )


def kms_client(info: SandboxInfo) -> Any:
    return boto3.session.Session().client(
        "kms",
        endpoint_url=info.kms_url,
        aws_access_key_id=info.access_key,
        aws_secret_access_key=info.secret_key,
        region_name=info.region,
        config=client_config(),
    )


def fresh_bucket_name(prefix: str = "t") -> str:
    """A unique, valid bucket name (lowercase, at most 63 characters)."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:20].strip("-") or "t"
    return f"{cleaned}-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """One object to write: its key, body and PutObject encryption parameters (e.g. `sse.write_params`)."""

    key: str
    body: bytes
    params: Mapping[str, Any] = field(default_factory=dict)


def put_objects(s3: Any, bucket: str, specs: Iterable[ObjectSpec]) -> None:
    for spec in specs:
        s3.put_object(Bucket=bucket, Key=spec.key, Body=spec.body, **dict(spec.params))


def sse_c_params(key: bytes) -> dict[str, Any]:
    """Read/write parameters for an SSE-C key (botocore base64-encodes it and adds the MD5)."""
    return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def read_back(s3: Any, bucket: str, key: str, sse_c_key: bytes | None = None) -> bytes:
    params = sse_c_params(sse_c_key) if sse_c_key is not None else {}
    body: bytes = s3.get_object(Bucket=bucket, Key=key, **params)["Body"].read()
    return body


def empty_bucket(s3: Any, bucket: str) -> None:
    """Delete every object version and delete marker, then the bucket (best effort cleanup)."""
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            s3.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
    s3.delete_bucket(Bucket=bucket)
