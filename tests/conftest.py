"""Session-wide servers and per-test fixtures: clients, fresh buckets, fresh KMS keys.

SeaweedFS (+ moto KMS): one runs per machine (fixed ports), so the whole session shares one sandbox;
isolation between tests comes from fresh buckets and keys. Ceph RGW (`rgw`, `rgw_s3`, `rgw_bucket_factory`):
a one-node cluster, started in the background as soon as collection shows a test that needs it, shared by
the session. `server` is parametrized over both ("seaweedfs", "rgw") for tests that must hold on every
server. A server that does not start is a test error, never a skip.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.sandbox import Sandbox, SandboxInfo, create_kms_key
from engine.sandbox_rgw import RgwInfo, RgwSandbox
from tests.helpers import BackgroundStart, S3Server, empty_bucket, fresh_bucket_name, kms_client, s3_client

RGW_FIXTURES = frozenset({"rgw_handle", "rgw", "rgw_s3", "rgw_bucket_factory", "server"})
_rgw_start = BackgroundStart(RgwSandbox)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Start RGW (about 13 s) while the first tests run, only when a collected test needs it."""
    if any(RGW_FIXTURES & set(getattr(item, "fixturenames", ())) for item in items):
        _rgw_start.begin()


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


@pytest.fixture(scope="session")
def rgw_handle() -> Iterator[RgwSandbox]:
    """The running `RgwSandbox` (mon + memstore OSD + radosgw on 127.0.0.1), stopped at the end of the session."""
    handle = _rgw_start.wait()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def rgw(rgw_handle: RgwSandbox) -> RgwInfo:
    """How to reach RGW: HTTPS/HTTP endpoints, CA bundle, credentials, `kms_keys` (SSE-KMS key ids)."""
    return rgw_handle.info


@pytest.fixture(scope="session")
def rgw_s3(rgw: RgwInfo) -> Any:
    """boto3 S3 client for RGW over HTTPS (RGW refuses encryption headers over plain HTTP)."""
    return s3_client(rgw, https=True)


@pytest.fixture
def rgw_bucket_factory(rgw_s3: Any) -> Iterator[Callable[..., str]]:
    """Fresh RGW buckets on demand, emptied and deleted after the test."""
    yield from _bucket_factory(rgw_s3)


def _bucket_factory(client: Any) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def make(prefix: str = "t") -> str:
        name = fresh_bucket_name(prefix)
        client.create_bucket(Bucket=name)
        created.append(name)
        return name

    yield make
    for name in created:
        with contextlib.suppress(Exception):
            empty_bucket(client, name)


@pytest.fixture(scope="session", params=["seaweedfs", "rgw"])
def server(request: pytest.FixtureRequest) -> S3Server:
    """Each real S3 server in turn: its name, connection info, HTTPS client, KMS key ids A and B, and the
    target modes it applies (SeaweedFS: sse-s3, sse-kms, sse-c; RGW 16.2: sse-kms, sse-c)."""
    if request.param == "rgw":
        info: RgwInfo = request.getfixturevalue("rgw")
        return S3Server("rgw", info, request.getfixturevalue("rgw_s3"), info.kms_keys[0], info.kms_keys[1],
                        frozenset({"sse-kms", "sse-c"}))
    weed: SandboxInfo = request.getfixturevalue("sandbox")
    return S3Server("seaweedfs", weed, request.getfixturevalue("s3"), create_kms_key(weed, "server A"),
                    create_kms_key(weed, "server B"), frozenset({"sse-s3", "sse-kms", "sse-c"}))


@pytest.fixture
def server_bucket_factory(server: S3Server) -> Iterator[Callable[..., str]]:
    """Fresh buckets on `server`, emptied and deleted after the test."""
    yield from _bucket_factory(server.s3)
