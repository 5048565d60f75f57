"""Session-wide sandbox (SeaweedFS + moto KMS) and per-test fixtures: clients, fresh buckets, fresh KMS keys.

One SeaweedFS runs per machine (fixed ports), so the whole session shares one sandbox; isolation between tests
comes from fresh buckets and keys. A sandbox that does not start is a test error, never a skip.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.sandbox import Sandbox, SandboxInfo, create_kms_key
from tests.helpers import empty_bucket, fresh_bucket_name, kms_client, s3_client


@pytest.fixture(scope="session")
def sandbox_handle() -> Iterator[Sandbox]:
    """The running `Sandbox` itself, for tests that restart SeaweedFS (`stop_s3` / `start_s3`)."""
    handle = Sandbox()
    info = handle.start()
    saved = {name: os.environ.get(name) for name in [*info.env(), "AWS_CA_BUNDLE"]}
    os.environ.update(info.env())
    os.environ.pop("AWS_CA_BUNDLE", None)  # clients pass verify= explicitly
    try:
        yield handle
    finally:
        handle.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def sandbox(sandbox_handle: Sandbox) -> SandboxInfo:
    return sandbox_handle.info


@pytest.fixture(scope="session")
def s3(sandbox: SandboxInfo) -> Any:
    """boto3 S3 client, admin identity, HTTPS with the sandbox's CA bundle."""
    return s3_client(sandbox, https=True)


@pytest.fixture(scope="session")
def s3_http(sandbox: SandboxInfo) -> Any:
    """boto3 S3 client, admin identity, plain HTTP."""
    return s3_client(sandbox, https=False)


@pytest.fixture(scope="session")
def kms(sandbox: SandboxInfo) -> Any:
    """boto3 KMS client for moto."""
    return kms_client(sandbox)


@pytest.fixture
def bucket_factory(s3_http: Any) -> Iterator[Callable[..., str]]:
    """Creates fresh buckets on demand; they are emptied and deleted after the test."""
    created: list[str] = []

    def make(prefix: str = "t") -> str:
        name = fresh_bucket_name(prefix)
        s3_http.create_bucket(Bucket=name)
        created.append(name)
        return name

    yield make
    for name in created:
        with contextlib.suppress(Exception):  # best effort: the sandbox is thrown away anyway
            empty_bucket(s3_http, name)


@pytest.fixture
def bucket(bucket_factory: Callable[..., str], request: pytest.FixtureRequest) -> str:
    """A fresh empty bucket for this test."""
    return bucket_factory(request.node.name.removeprefix("test_"))


@pytest.fixture
def kms_key(sandbox: SandboxInfo, request: pytest.FixtureRequest) -> str:
    """A fresh moto KMS key id for this test."""
    return create_kms_key(sandbox, description=f"test {request.node.nodeid}")
