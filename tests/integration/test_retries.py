"""One owner of retries: botocore makes one attempt, the boundary sends a failed request again under the
engine's policy, and the fault proxy counts every attempt that reached it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from engine.retry import Retrier, Throttle
from engine.sandbox import SandboxInfo
from tests.faultproxy import FaultProxy, Rule
from workers.errors import RetryableError
from workers.model import PartResult
from workers.s3 import S3, CreateUpload, Endpoint, PutRequest

MAX_RETRIES = 3
PART = 5 * 1024 * 1024


@pytest.fixture
def proxy(sandbox: SandboxInfo) -> Iterator[FaultProxy]:
    with FaultProxy(sandbox.s3_http, [], seed=7) as p:
        yield p


def _boundary(proxy: FaultProxy, sandbox: SandboxInfo, *, fast: bool) -> Any:
    retry = Retrier(Throttle(8), max_retries=MAX_RETRIES, base=0.01, cap=0.05)
    return S3.open(Endpoint(endpoint_url=proxy.url, region=sandbox.region, lean=fast), retry=retry)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "botocore"])
@pytest.mark.parametrize("kind", ["internal", "slowdown", "reset"])
def test_no_request_is_tried_more_than_max_retries_plus_one_times(
        sandbox: SandboxInfo, s3_http: Any, bucket: str, proxy: FaultProxy, fast: bool, kind: str) -> None:
    s3_http.put_object(Bucket=bucket, Key="k", Body=b"x")
    proxy.set_rules([Rule(kind, path_regex=rf"^/{bucket}/k$", seconds=0.01)])

    async def head() -> None:
        async with _boundary(proxy, sandbox, fast=fast) as s3:
            await s3.head(bucket, "k")

    with pytest.raises(RetryableError):
        anyio.run(head)
    stats = proxy.statistics()
    assert stats.injected[kind] == MAX_RETRIES + 1
    assert stats.requests == MAX_RETRIES + 1


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "botocore"])
def test_create_list_parts_and_complete_are_retried(
        sandbox: SandboxInfo, s3_http: Any, bucket: str, proxy: FaultProxy, fast: bool) -> None:
    """Each of CreateMultipartUpload, ListParts and CompleteMultipartUpload fails twice, then goes through."""
    proxy.set_rules([
        Rule("internal", methods=frozenset({"POST"}), query_contains="uploads", limit=2),
        Rule("slowdown", methods=frozenset({"GET"}), query_contains="uploadId=", limit=2, seconds=0.01),
        Rule("reset", methods=frozenset({"POST"}), query_contains="uploadId=", limit=2),
    ])
    data = os.urandom(PART)

    async def upload() -> list[PartResult]:
        async with _boundary(proxy, sandbox, fast=fast) as s3:
            upload_id = await s3.create_upload(CreateUpload(bucket, "mp"))
            part = await s3.upload_part(bucket, "mp", upload_id, 1, data)
            listed = await s3.list_parts(bucket, "mp", upload_id)
            await s3.complete_upload(bucket, "mp", upload_id, [part])
            return listed

    listed = anyio.run(upload)
    assert [p.part_number for p in listed] == [1]
    injected = proxy.statistics().injected
    assert (injected["internal"], injected["slowdown"], injected["reset"]) == (2, 2, 2)
    assert s3_http.get_object(Bucket=bucket, Key="mp")["Body"].read() == data
    assert s3_http.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "botocore"])
def test_a_delete_without_version_is_not_resent_after_the_server_may_have_acted(
        sandbox: SandboxInfo, s3_http: Any, bucket: str, proxy: FaultProxy, fast: bool) -> None:
    """A reset after the request was sent may follow a delete that happened: on a versioned bucket a
    second one would add a second delete marker, so only a refusal (a throttle) is resent."""
    proxy.set_rules([Rule("internal", methods=frozenset({"DELETE"}), limit=1),
                     Rule("slowdown", methods=frozenset({"PUT"}), limit=1, seconds=0.01)])

    async def put_then_delete() -> None:
        async with _boundary(proxy, sandbox, fast=fast) as s3:
            await s3.put(PutRequest(bucket, "d", b"x"))       # throttled once, resent
            await s3.delete(bucket, "d")                      # 500 once: not resent

    with pytest.raises(RetryableError):
        anyio.run(put_then_delete)
    stats = proxy.statistics()
    assert stats.injected["slowdown"] == 1 and stats.injected["internal"] == 1
    assert stats.requests == 3
