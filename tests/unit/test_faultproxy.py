"""Tests of tests/faultproxy.py: S3 traffic through the proxy to an in-process moto server on loopback."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from moto.server import ThreadedMotoServer

from tests.faultproxy import FaultProxy, Rule

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "NO_PROXY": "127.0.0.1,localhost",
        }.items():
            env.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                     "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def s3(endpoint: str, *, retries: int = 0, read_timeout: float = 10.0, pool: int = 10) -> Any:
    """A path-style client; botocore's `max_attempts` counts retries, so 0 makes every fault visible."""
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": retries, "mode": "standard"},
        connect_timeout=5,
        read_timeout=read_timeout,
        max_pool_connections=pool,
    )
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)


@pytest.fixture
def bucket(moto_url: str) -> str:
    name = f"faultproxy-{uuid.uuid4().hex[:12]}"
    client = s3(moto_url)
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="small", Body=b"x" * 1024)
    client.put_object(Bucket=name, Key="one-mib", Body=os.urandom(MIB))
    return name


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_url, seed=1234) as started:
        yield started


def error_code(exc: ClientError) -> str:
    return str(exc.response["Error"]["Code"])


def test_large_objects_round_trip_without_rules(proxy: FaultProxy, bucket: str) -> None:
    client = s3(proxy.url)
    data = os.urandom(20 * MIB)
    # A file-like body makes botocore send `Expect: 100-continue`.
    client.put_object(Bucket=bucket, Key="big", Body=io.BytesIO(data))
    got = client.get_object(Bucket=bucket, Key="big")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()

    multipart = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=3)
    client.upload_fileobj(io.BytesIO(data), bucket, "big-multipart", Config=multipart)
    sink = io.BytesIO()
    client.download_fileobj(bucket, "big-multipart", sink, Config=multipart)
    assert sink.getvalue() == data

    stats = proxy.statistics()
    assert stats.total_injected == 0
    assert stats.forwarded == stats.requests >= 2 + 5  # put, get; create, 3 parts, complete; then the reads


def test_chunked_request_body_passes_through(proxy: FaultProxy, bucket: str) -> None:
    port = int(proxy.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    pieces = [b"a" * 70_000, b"b" * 5, b"c" * 300_000]
    conn.request("PUT", f"/{bucket}/chunked", body=iter(pieces), encode_chunked=True)
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    # The connection stays usable for the next request (moto refuses an unsigned GET, which is fine here).
    conn.request("HEAD", f"/{bucket}/chunked")
    conn.getresponse().read()
    conn.close()
    got = s3(proxy.url).get_object(Bucket=bucket, Key="chunked")["Body"].read()
    assert got == b"".join(pieces)
    assert proxy.statistics().forwarded == 3


def test_error_after_a_body_without_expect_keeps_the_connection(proxy: FaultProxy, bucket: str) -> None:
    proxy.set_rules([Rule("internal", limit=1)])
    port = int(proxy.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("PUT", f"/{bucket}/plain", body=b"p" * 300_000)  # Content-Length, no Expect
    response = conn.getresponse()
    assert response.status == 500
    assert b"<Code>InternalError</Code>" in response.read()
    assert conn.sock is not None  # the 500 kept the connection open...
    conn.request("PUT", f"/{bucket}/plain", body=b"q" * 300_000)
    response = conn.getresponse()  # ...and the proxy drained the first body, so this parses as a request
    response.read()
    assert response.status == 200
    conn.close()
    assert s3(proxy.url).get_object(Bucket=bucket, Key="plain")["Body"].read() == b"q" * 300_000


def test_client_connections_are_kept_alive(proxy: FaultProxy, bucket: str) -> None:
    # moto closes its connection after every response; the proxy reconnects upstream instead.
    url = s3(proxy.url).generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "small"})
    port = int(proxy.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    sock = conn.sock
    for _ in range(5):
        conn.request("GET", url.removeprefix(proxy.url))
        response = conn.getresponse()
        assert response.read() == b"x" * 1024
        assert conn.sock is sock
    conn.close()


def test_head_has_no_body_and_keeps_the_connection_usable(proxy: FaultProxy, bucket: str) -> None:
    client = s3(proxy.url, pool=1, read_timeout=2)
    for _ in range(3):
        assert client.head_object(Bucket=bucket, Key="one-mib")["ContentLength"] == MIB
        assert len(client.get_object(Bucket=bucket, Key="small")["Body"].read()) == 1024
    with pytest.raises(ClientError) as missing:
        client.head_object(Bucket=bucket, Key="absent")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    client.delete_object(Bucket=bucket, Key="small")  # 204 with no body
    assert proxy.statistics().forwarded == 8


def test_slowdown_is_a_503_with_retry_after(proxy: FaultProxy, bucket: str) -> None:
    proxy.set_rules([Rule("slowdown", seconds=2)])
    client = s3(proxy.url)
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket=bucket, Key="small")
    assert error_code(caught.value) == "SlowDown"
    metadata = caught.value.response["ResponseMetadata"]
    assert metadata["HTTPStatusCode"] == 503
    assert metadata["HTTPHeaders"]["retry-after"] == "2"

    # A PUT waiting for `100 Continue` gets the 503 instead, and the client can carry on afterwards.
    with pytest.raises(ClientError) as caught:
        client.put_object(Bucket=bucket, Key="put", Body=io.BytesIO(os.urandom(2 * MIB)))
    assert error_code(caught.value) == "SlowDown"
    proxy.set_rules([])
    client.put_object(Bucket=bucket, Key="put", Body=io.BytesIO(b"after"))
    assert client.get_object(Bucket=bucket, Key="put")["Body"].read() == b"after"
    assert proxy.statistics().injected["slowdown"] == 2


def test_internal_is_a_500(proxy: FaultProxy, bucket: str) -> None:
    proxy.set_rules([Rule("internal")])
    with pytest.raises(ClientError) as caught:
        s3(proxy.url).put_object(Bucket=bucket, Key="k", Body=b"botocore sends Expect even for bytes")
    assert error_code(caught.value) == "InternalError"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert proxy.statistics().forwarded == 0


@pytest.mark.parametrize("body", [None, b"bytes", io.BytesIO(b"file-like, so Expect: 100-continue")])
def test_reset_is_a_connection_error(proxy: FaultProxy, bucket: str, body: Any) -> None:
    proxy.set_rules([Rule("reset")])
    client = s3(proxy.url)
    with pytest.raises(ConnectionClosedError):
        if body is None:
            client.get_object(Bucket=bucket, Key="small")
        else:
            client.put_object(Bucket=bucket, Key="k", Body=body)
    assert proxy.statistics().injected["reset"] == 1


@pytest.mark.parametrize("kind", ["truncate", "reset_mid_body"])
def test_body_faults_deliver_half_the_body_then_fail(proxy: FaultProxy, bucket: str, kind: Any) -> None:
    proxy.set_rules([Rule(kind)])
    response = s3(proxy.url).get_object(Bucket=bucket, Key="one-mib")
    assert response["ContentLength"] == MIB  # the headers promise the whole object
    with pytest.raises((IncompleteReadError, ResponseStreamingError)):
        response["Body"].read()
    stats = proxy.statistics()
    assert stats.injected[kind] == 1
    assert stats.forwarded == 1


def test_truncate_sends_exactly_half(proxy: FaultProxy, bucket: str) -> None:
    proxy.set_rules([Rule("truncate")])
    url = s3(proxy.url).generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "one-mib"})
    port = int(proxy.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", url.removeprefix(proxy.url))
    response = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert len(caught.value.partial) == MIB // 2
    conn.close()


@pytest.mark.parametrize("kind", ["stall", "delay"])
def test_stall_and_delay_add_latency(proxy: FaultProxy, bucket: str, kind: Any) -> None:
    client = s3(proxy.url)
    client.get_object(Bucket=bucket, Key="small")["Body"].read()  # connect and warm up
    started = time.monotonic()
    client.get_object(Bucket=bucket, Key="small")["Body"].read()
    baseline = time.monotonic() - started
    proxy.set_rules([Rule(kind, seconds=0.5)])
    started = time.monotonic()
    assert len(client.get_object(Bucket=bucket, Key="small")["Body"].read()) == 1024
    assert time.monotonic() - started >= 0.5 > baseline
    assert proxy.statistics().injected[kind] == 1


def test_stall_longer_than_the_read_timeout_times_out(proxy: FaultProxy, bucket: str) -> None:
    proxy.set_rules([Rule("stall", seconds=2)])
    with pytest.raises(ReadTimeoutError):
        s3(proxy.url, read_timeout=0.3).get_object(Bucket=bucket, Key="small")


def outcomes(client: Any, bucket: str, count: int) -> list[str]:
    """GET the small object `count` times; return "ok" or the error code of each."""
    seen = []
    for _ in range(count):
        try:
            client.get_object(Bucket=bucket, Key="small")["Body"].read()
            seen.append("ok")
        except ClientError as exc:
            seen.append(error_code(exc))
    return seen


def test_rate_injects_about_that_fraction_reproducibly(moto_url: str, bucket: str) -> None:
    runs = []
    for _ in range(2):
        with FaultProxy(moto_url, [Rule("slowdown", rate=0.1)], seed=42) as proxy:
            seen = outcomes(s3(proxy.url), bucket, 300)
            stats = proxy.statistics()
        injected = seen.count("SlowDown")
        assert 12 <= injected <= 54  # 30 expected; the band is more than 4 standard deviations wide
        assert stats.injected["slowdown"] == injected
        assert stats.requests == 300
        assert stats.forwarded == 300 - injected
        runs.append(seen)
    assert runs[0] == runs[1]  # the same seed makes the same decisions


def test_after_and_limit(proxy: FaultProxy, bucket: str) -> None:
    proxy.set_rules([Rule("internal", after=2, limit=3)])
    client = s3(proxy.url)
    assert outcomes(client, bucket, 7) == ["ok", "ok"] + ["InternalError"] * 3 + ["ok", "ok"]
    proxy.set_rules([Rule("internal", after=1, limit=1)])  # new rules start counting again
    assert outcomes(client, bucket, 3) == ["ok", "InternalError", "ok"]
    stats = proxy.statistics()
    assert (stats.requests, stats.forwarded, stats.injected["internal"]) == (10, 6, 4)


def test_rules_filter_by_method_path_and_query(proxy: FaultProxy, bucket: str) -> None:
    proxy.set_rules([
        Rule("slowdown", methods=frozenset({"put"}), path_regex=r"/hot$"),
        Rule("internal", query_contains="partNumber="),
    ])
    client = s3(proxy.url)
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket=bucket, Key="hot")
    assert error_code(caught.value) == "NoSuchKey"  # a GET is not a PUT
    client.put_object(Bucket=bucket, Key="cold", Body=b"1")
    with pytest.raises(ClientError) as caught:
        client.put_object(Bucket=bucket, Key="hot", Body=b"1")
    assert error_code(caught.value) == "SlowDown"
    upload = client.create_multipart_upload(Bucket=bucket, Key="parts")
    with pytest.raises(ClientError) as caught:
        client.upload_part(Bucket=bucket, Key="parts", UploadId=upload["UploadId"], PartNumber=1, Body=b"p")
    assert error_code(caught.value) == "InternalError"
    client.abort_multipart_upload(Bucket=bucket, Key="parts", UploadId=upload["UploadId"])
    stats = proxy.statistics()
    assert (stats.injected["slowdown"], stats.injected["internal"], stats.total_injected) == (1, 1, 2)


def test_botocore_retries_get_through_half_slowdowns(proxy: FaultProxy, bucket: str) -> None:
    proxy.set_rules([Rule("slowdown", rate=0.5)])
    client = s3(proxy.url, retries=5)
    retries = 0
    for _ in range(5):
        response = client.get_object(Bucket=bucket, Key="small")
        assert response["Body"].read() == b"x" * 1024
        retries += response["ResponseMetadata"]["RetryAttempts"]
    assert retries == proxy.statistics().injected["slowdown"] > 0


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="kind"):
        Rule("teapot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate"):
        Rule("delay", rate=1.5)
