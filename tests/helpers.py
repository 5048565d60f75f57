"""Small helpers shared by tests: boto3 clients for the sandbox, fresh names, writing and reading objects."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
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


@dataclass(frozen=True)
class S3Server:
    """One real S3 server as tests see it (the `server` fixture)."""

    name: str                 # "seaweedfs" or "rgw"
    info: SandboxInfo         # endpoints and credentials; run_rekey/source_section take it
    s3: Any                   # boto3 client over HTTPS, admin identity
    kms_a: str                # an SSE-KMS key id the server knows
    kms_b: str                # another one
    applies: frozenset[str]   # target modes it really applies ("sse-s3", "sse-kms", "sse-c")

    def kms_key_matches(self, reported: object, wanted: str) -> bool:
        """HeadObject's SSEKMSKeyId names `wanted` (SeaweedFS with moto answers an ARN, RGW the bare id)."""
        return reported == wanted or str(reported).endswith("/" + wanted)


class BackgroundStart:
    """Start a sandbox in a thread (so its start-up overlaps other tests) and hand it over when asked.
    A failed start is raised by `wait`, never swallowed."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        handle = self._factory()
        try:
            handle.start()
        except BaseException as exc:
            self._error = exc
            return
        self._handle = handle

    def begin(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sandbox-start", daemon=True)
            self._thread.start()

    def wait(self) -> Any:
        self.begin()
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._handle


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
