"""Where a run's requests go: a plain setup's are all built by rekey itself, without botocore; the endpoint
given only by the environment (as on AWS) still gets the fast transport; and a bucket answered from another
region is learned once and never blamed on a key."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.retry import Retrier, Throttle
from engine.sandbox import SandboxInfo
from tests.cli_helpers import REPO, rekey_env
from tests.faultproxy import FaultProxy, Rule
from tests.integration.reliability_helpers import write_config
from workers.model import Encryption, Mode
from workers.s3 import S3, CopyRequest, Endpoint, PutRequest, Source


def test_endpoint_only_in_the_environment_takes_the_fast_transport(
        sandbox: SandboxInfo, s3_http: Any, bucket: str, tmp_path: Path) -> None:
    for i in range(20):
        s3_http.put_object(Bucket=bucket, Key=f"obj/{i:02d}", Body=b"x" * (i + 1))
    config = write_config(tmp_path / "rekey.toml", {
        "source": {"bucket": bucket, "prefix": "obj/", "region": sandbox.region},
        "target": {"mode": "sse-s3"},
        "run": {"checkpoint": str(tmp_path / "rekey.sqlite")},
    })
    env = {**rekey_env(sandbox), "AWS_ENDPOINT_URL_S3": sandbox.s3_https, "AWS_CA_BUNDLE": sandbox.ca_bundle}
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "engine.launch", "run", "-q", "-c", str(config), "--report",
                           str(report)], capture_output=True, text=True, env=env, cwd=str(REPO), timeout=180,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads(report.read_text())["run"]
    by_transport = run["requests_by_transport"]
    assert sum(by_transport.values()) == run["requests"]
    # every object: a HEAD and a copy (fast), and its verification HEAD (fast); so does the listing
    assert by_transport["fast"] >= 3 * 20 and by_transport["botocore"] <= 5   # bucket calls only
    for i in range(20):
        assert s3_http.head_object(Bucket=bucket, Key=f"obj/{i:02d}")["ServerSideEncryption"] == "AES256"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_plain_setup_builds_every_request_itself_without_botocore(
        sandbox: SandboxInfo, s3_http: Any, bucket_factory: Any, tmp_path: Path, scheme: str) -> None:
    """An endpoint_url in the config and credentials in the environment: rekey builds and signs every request
    of a bucket-to-bucket run itself (workers.s3.native), botocore's client is never loaded, and what the
    destination holds is what the user asked for: the bytes, the metadata, the tags, SSE-S3. Over TLS the
    connections verify with AWS_CA_BUNDLE, in botocore's TLS context."""
    src, dst = bucket_factory("native-src"), bucket_factory("native-dst")
    bodies = {f"k/{i:02d} é+%.bin": bytes([i]) * (100 + i) for i in range(12)}
    for key, body in bodies.items():
        s3_http.put_object(Bucket=src, Key=key, Body=body, Metadata={"owner": "a b"}, ContentType="x/y",
                           Tagging="team=blue")
    config = write_config(tmp_path / "rekey.toml", {
        "source": {"bucket": src, "endpoint_url": sandbox.s3_https if scheme == "https" else sandbox.s3_http,
                   "region": sandbox.region},
        "destination": {"bucket": dst},
        "target": {"mode": "sse-s3"},
        "run": {"checkpoint": str(tmp_path / "rekey.sqlite")},
    })
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine.launch", "run", "-q", "-c",
                           str(config), "--report", str(report)], capture_output=True, text=True,
                          env={**rekey_env(sandbox), "AWS_CA_BUNDLE": sandbox.ca_bundle}, cwd=str(REPO),
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "workers.s3.native" in imported
    assert not imported & {"botocore.client", "botocore.auth", "botocore.session", "aiobotocore.session"}
    # over TLS, botocore's TLS context (workers.s3.pool.tls_context) brings urllib3 in; plain HTTP needs neither
    assert ("urllib3" in imported) == (scheme == "https")
    run = json.loads(report.read_text())["run"]
    assert run["requests_by_transport"] == {"fast": run["requests"], "botocore": 0}
    for key, body in bodies.items():
        got = s3_http.get_object(Bucket=dst, Key=key)
        assert (got["Body"].read(), got["ServerSideEncryption"]) == (body, "AES256")
        assert (got["Metadata"], got["ContentType"]) == ({"owner": "a b"}, "x/y")
        assert s3_http.get_object_tagging(Bucket=dst, Key=key)["TagSet"] == [{"Key": "team", "Value": "blue"}]


@pytest.fixture
def regional_proxy(sandbox: SandboxInfo) -> Iterator[FaultProxy]:
    """SeaweedFS behind a proxy that, like S3, refuses requests signed for another region than eu-west-3."""
    with FaultProxy(sandbox.s3_http, [Rule("wrong_region", region="eu-west-3")], seed=3) as p:
        yield p


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "botocore"])
def test_a_bucket_in_another_region_is_learned_once(
        sandbox: SandboxInfo, s3_http: Any, bucket: str, regional_proxy: FaultProxy, fast: bool) -> None:
    s3_http.put_object(Bucket=bucket, Key="k", Body=b"abc")

    async def work() -> list[Any]:
        retry = Retrier(Throttle(4), max_retries=2, base=0.01, cap=0.05)
        endpoint = Endpoint(endpoint_url=regional_proxy.url, region="us-west-2", lean=fast)
        async with S3.open(endpoint, retry=retry) as s3:
            head = await s3.head(bucket, "k")                              # HEAD: 301, x-amz-bucket-region
            got = await s3.get_range(bucket, "k", 0, 2)
            await s3.put(PutRequest(bucket, "k2", b"defg"))
            await s3.copy(CopyRequest(bucket, "k3", Source(bucket, "k2"), encryption=Encryption(Mode.SSE_S3)))
            listed = [r.key async for page in s3.list_pages(bucket) for r in page]
            return [head.size, got, listed, dict(s3.regions)]

    size, got, listed, regions = anyio.run(work)
    assert (size, got, listed) == (3, b"abc", ["k", "k2", "k3"])
    # botocore alone follows it with its own redirector and cache; the fast transport through the boundary's
    assert regions == ({bucket: "eu-west-3"} if fast else {})
    assert regional_proxy.statistics().injected["wrong_region"] == 1


def test_a_redirect_that_names_no_region_is_asked_with_a_head_bucket(
        sandbox: SandboxInfo, s3_http: Any, bucket: str) -> None:
    """Some gateways answer an object request for the wrong region with a bare 301 or 400: the bucket's
    region is then asked once with a HeadBucket, and every request after goes there."""
    s3_http.put_object(Bucket=bucket, Key="k", Body=b"abc")
    rule = Rule("wrong_region", region="eu-west-3", silent_objects=True)

    async def work(url: str) -> list[Any]:
        async with S3.open(Endpoint(endpoint_url=url, region="us-west-2")) as s3:
            head = await s3.head(bucket, "k")
            got = await s3.get_range(bucket, "k", 0, 2)
            return [head.encryption.mode, got, dict(s3.regions)]

    with FaultProxy(sandbox.s3_http, [rule], seed=5) as proxy:
        mode, got, regions = anyio.run(work, proxy.url)
        injected = proxy.statistics().injected["wrong_region"]
    assert (mode, got, regions) == (Mode.NONE, b"abc", {bucket: "eu-west-3"})
    assert injected == 2   # the HEAD of the object, then the HeadBucket that named the region


def test_a_head_from_the_wrong_region_is_not_a_key_problem(
        sandbox: SandboxInfo, s3_http: Any, bucket: str, regional_proxy: FaultProxy) -> None:
    """A HEAD answered 301 (no body, so no error code) used to read as "object needs an SSE-C key"."""
    s3_http.put_object(Bucket=bucket, Key="plain", Body=b"abc")

    async def head() -> Any:
        async with S3.open(Endpoint(endpoint_url=regional_proxy.url, region="us-west-2")) as s3:
            return await s3.head(bucket, "plain")

    assert anyio.run(head).encryption.mode == Mode.NONE
    assert regional_proxy.statistics().injected["wrong_region"] == 1
