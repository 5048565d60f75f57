"""The fast transport sends exactly what botocore sends: method, URL, headers and signature, for every
operation it carries, awkward keys, version ids, SSE-C and copy-source SSE-C, temporary credentials,
on an AWS region outside us-east-1 (virtual-hosted), a custom endpoint (path style) and an IPv6 literal.

No network: botocore's request (the botocore transport's aiobotocore client) is caught at its `before-send`
event (and never sent); the fast transport's (built and signed by its own sync botocore client, made as the
boundary makes it) is the one it would hand to the wire.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from workers.model import Encryption, Mode, PartResult, SecretKey
from workers.s3 import Attributes, CopyRequest, CreateUpload, Directive, Endpoint, PutRequest, Source
from workers.s3 import convert as cv
from workers.s3.fast import HOT_OPS, FastTransport
from workers.s3.ops import Op
from workers.s3.sdk import client_kwargs, new_session
from workers.s3.sdk_sync import fast_client
from workers.s3.template import TEMPLATED

KEYS = ["plain.txt", "with space/a b.txt", "ünïcødé/ключ.bin", "a+b=c", "100%/x%20y", "~tilde", "a//b",
        "dir/", "/leading", "q?x#y&z"]
ENDPOINTS = {
    "aws-eu-west-1": Endpoint(region="eu-west-1"),
    "custom-path-style": Endpoint(endpoint_url="http://127.0.0.1:9000", region="us-west-2"),
    "ipv6-literal": Endpoint(endpoint_url="http://[::1]:9000", region="us-east-1"),
}
BUCKET = "rekey-parity"
SSE_C = Encryption(Mode.SSE_C, sse_c_key=SecretKey(bytes(range(32)), "test"))
OLD_SSE_C = Encryption(Mode.SSE_C, sse_c_key=SecretKey(bytes(range(1, 33)), "test"))
KMS = Encryption(Mode.SSE_KMS, kms_key_id="arn:aws:kms:eu-west-1:111122223333:key/abc", bucket_key=True,
                 context={"tenant": "a"})
VERSION = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"


def requests_for(key: str) -> list[tuple[Op, dict[str, Any]]]:
    """What rekey sends for one key, built the way the boundary builds it."""
    head = cv.head_from_response(key, {"ContentLength": 3, "ETag": '"e"', "Metadata": {"note": "a b"},
                                       "ContentType": "text/plain", "StorageClass": "STANDARD_IA",
                                       "ExpiresString": "Wed, 21 Oct 2026 07:28:00 GMT"})
    source = Source(BUCKET, key, version_id=VERSION, if_match='"e"', encryption=OLD_SSE_C)
    return [
        (Op.HEAD_OBJECT, {"Bucket": BUCKET, "Key": key}),
        (Op.HEAD_OBJECT, {"Bucket": BUCKET, "Key": key, "VersionId": VERSION, **cv.key_params(SSE_C)}),
        (Op.GET_OBJECT, {"Bucket": BUCKET, "Key": key, "Range": "bytes=0-9", "IfMatch": '"e"',
                         **cv.key_params(SSE_C)}),
        (Op.PUT_OBJECT, cv.put_params(PutRequest(BUCKET, key, b"abc", content_md5="kAFQmDzST7DWlj99KOF/cg==",
                                                 encryption=KMS, attributes=Attributes.of(head),
                                                 tags={"k": "v w"}, if_match='"e"'))),
        (Op.COPY_OBJECT, cv.copy_params(CopyRequest(BUCKET, key + ".copy", source, encryption=SSE_C,
                                                    attributes=Attributes.of(head)))),
        (Op.COPY_OBJECT, cv.copy_params(CopyRequest(BUCKET, key, Source(BUCKET, key, if_match='"e"'),
                                                    encryption=Encryption(Mode.SSE_S3),
                                                    metadata_directive=Directive.COPY, storage_class="GLACIER_IR"))),
        (Op.UPLOAD_PART, {"Bucket": BUCKET, "Key": key, "UploadId": "up/1+2", "PartNumber": 3, "Body": b"part",
                          "ContentMD5": "kAFQmDzST7DWlj99KOF/cg==", **cv.key_params(SSE_C)}),
        (Op.UPLOAD_PART_COPY, {"Bucket": BUCKET, "Key": key, "UploadId": "up/1+2", "PartNumber": 2,
                               **cv.source_params(source), "CopySourceRange": "bytes=0-5242879",
                               **cv.key_params(SSE_C)}),
        (Op.DELETE_OBJECT, {"Bucket": BUCKET, "Key": key, "VersionId": VERSION}),
        (Op.HEAD_BUCKET, {"Bucket": BUCKET}),
        (Op.GET_BUCKET_WEBSITE, {"Bucket": BUCKET}),
        (Op.CREATE_MULTIPART_UPLOAD, cv.create_params(CreateUpload(BUCKET, key, encryption=KMS,
                                                                   attributes=Attributes.of(head),
                                                                   tags={"k": "v w"}))),
        (Op.CREATE_MULTIPART_UPLOAD, cv.create_params(CreateUpload(BUCKET, key, encryption=SSE_C))),
        (Op.COMPLETE_MULTIPART_UPLOAD, {"Bucket": BUCKET, "Key": key, "UploadId": "up/1+2",
                                        "MultipartUpload": cv.completed_parts([PartResult(1, '"a"', 5),
                                                                               PartResult(2, '"b"', 3)]),
                                        **cv.key_params(SSE_C), "IfMatch": '"e"'}),
        (Op.ABORT_MULTIPART_UPLOAD, {"Bucket": BUCKET, "Key": key, "UploadId": "up/1+2"}),
        (Op.LIST_PARTS, {"Bucket": BUCKET, "Key": key, "UploadId": "up/1+2", "PartNumberMarker": 7}),
        (Op.LIST_OBJECTS_V2, {"Bucket": BUCKET, "Prefix": key, "MaxKeys": 1000, "StartAfter": key}),
        (Op.LIST_OBJECTS_V2, {"Bucket": BUCKET, "Prefix": "", "MaxKeys": 1, "ContinuationToken": "1/a+b="}),
        (Op.GET_OBJECT_TAGGING, {"Bucket": BUCKET, "Key": key}),
        (Op.GET_OBJECT_TAGGING, {"Bucket": BUCKET, "Key": key, "VersionId": VERSION}),
    ]


class _Caught(Exception):
    def __init__(self, request: Any) -> None:
        super().__init__("caught")
        self.request = request


def _catch(request: Any, **_: Any) -> None:
    raise _Caught(request)


@pytest.fixture(autouse=True)
def frozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Temporary credentials, one clock and one invocation id for both transports."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_CA_BUNDLE", "HTTPS_PROXY",
                 "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIAEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret/with+chars")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token//with==padding")
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda **_: dt.datetime(2026, 12, 1, 9, 0, 0))
    fixed = uuid.UUID("12345678-1234-5678-1234-567812345678")
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    yield


def _shape(request: Any) -> dict[str, Any]:
    headers = {k.lower(): v.decode() if isinstance(v, bytes) else str(v) for k, v in request.headers.items()}
    return {"method": request.method, "url": request.url, "headers": headers}


async def _both(endpoint: Endpoint, requests: list[tuple[Op, dict[str, Any]]]) -> list[tuple[Any, Any]]:
    session = new_session(endpoint)
    async with session.create_client("s3", **client_kwargs(endpoint)) as client:
        client.meta.events.register("before-send.s3", _catch)
        fast = FastTransport(fast_client(endpoint), {})
        out = []
        for op, params in requests:
            with pytest.raises(_Caught) as caught:
                await getattr(client, op.value)(**dict(params))
            out.append((_shape(caught.value.request), _shape(await fast.prepare(op, params))))
        return out


@pytest.mark.parametrize("where", ENDPOINTS)
def test_fast_requests_equal_botocores(where: str) -> None:
    requests = [(key, op, params) for key in KEYS for op, params in requests_for(key)]
    # every operation the fast transport carries
    assert {op for _, op, _ in requests} == HOT_OPS
    sent = anyio.run(_both, ENDPOINTS[where], [(op, params) for _, op, params in requests])
    for (botocore_sent, fast_sent), (key, op, _) in zip(sent, requests, strict=True):
        assert fast_sent == botocore_sent, (op, key)
        assert "x-amz-security-token" in fast_sent["headers"]
        assert fast_sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEKEY/")


def test_the_urls_are_the_addressing_each_endpoint_needs() -> None:
    """What `test_fast_requests_equal_botocores` compares is the right thing: virtual-hosted regional on AWS,
    path style on a custom endpoint, the bracketed IPv6 host; signed for the configured region."""
    got = {where: anyio.run(_both, endpoint, [(Op.HEAD_OBJECT, {"Bucket": BUCKET, "Key": "a b"})])[0][1]
           for where, endpoint in ENDPOINTS.items()}
    assert got["aws-eu-west-1"]["url"] == f"https://{BUCKET}.s3.eu-west-1.amazonaws.com/a%20b"
    assert got["custom-path-style"]["url"] == f"http://127.0.0.1:9000/{BUCKET}/a%20b"
    assert got["ipv6-literal"]["url"] == f"http://[::1]:9000/{BUCKET}/a%20b"
    assert "/eu-west-1/s3/aws4_request" in got["aws-eu-west-1"]["headers"]["authorization"]
    assert "/us-west-2/s3/aws4_request" in got["custom-path-style"]["headers"]["authorization"]


def test_a_learned_region_readdresses_and_resigns() -> None:
    """A bucket learned to be in eu-central-1 is sent there by both transports."""
    async def run() -> tuple[Any, Any]:
        endpoint = ENDPOINTS["aws-eu-west-1"]
        session = new_session(endpoint)
        async with session.create_client("s3", **client_kwargs(endpoint)) as client:
            regions = {BUCKET: "eu-central-1"}

            def learned(builtins: dict[str, Any], params: dict[str, Any], **_: Any) -> None:
                if params.get("Bucket") in regions:
                    builtins["AWS::Region"] = regions[params["Bucket"]]
            client.meta.events.register("before-endpoint-resolution.s3", learned)
            client.meta.events.register("before-send.s3", _catch)
            with pytest.raises(_Caught) as caught:
                await client.head_object(Bucket=BUCKET, Key="k")
            sync = fast_client(endpoint)
            sync.meta.events.register("before-endpoint-resolution.s3", learned)
            return _shape(caught.value.request), _shape(await FastTransport(sync, regions).prepare(
                Op.HEAD_OBJECT, {"Bucket": BUCKET, "Key": "k"}))
    botocore_sent, fast_sent = anyio.run(run)
    assert fast_sent == botocore_sent
    assert fast_sent["url"] == f"https://{BUCKET}.s3.eu-central-1.amazonaws.com/k"
    assert "/eu-central-1/s3/aws4_request" in fast_sent["headers"]["authorization"]


def test_every_shape_of_call_without_a_mapping_is_templated() -> None:
    """The comparisons above go through the request templates (workers.s3.template): after the first key,
    each templated operation's calls are filled in from a template, not built by botocore."""
    async def shapes() -> dict[Any, Any]:
        endpoint = ENDPOINTS["custom-path-style"]
        fast = FastTransport(fast_client(endpoint), {})
        for key in KEYS:
            for op, params in requests_for(key):
                await fast.prepare(op, params)
        return dict(fast._templates)
    templates = anyio.run(shapes)
    assert {shape[0][0] for shape in templates} == TEMPLATED
    assert all(t is not None for t in templates.values())
    key_b64 = base64.b64encode(bytes(range(32))).decode()   # SSE_C's key, in the templates' headers
    assert key_b64 not in repr(list(templates.values()))


def test_a_region_learned_after_a_template_readdresses_the_next_call() -> None:
    """A template is per bucket region: once a redirect taught the bucket's region, the next call of the same
    shape goes there, signed for it, not to the region the template was first made for."""
    async def run() -> tuple[Any, Any]:
        endpoint = ENDPOINTS["aws-eu-west-1"]
        client = fast_client(endpoint)
        regions: dict[str, str] = {}

        def learned(builtins: dict[str, Any], params: dict[str, Any], **_: Any) -> None:
            if params.get("Bucket") in regions:   # as the boundary registers it
                builtins["AWS::Region"] = regions[params["Bucket"]]
        client.meta.events.register("before-endpoint-resolution.s3", learned)
        fast = FastTransport(client, regions)
        before = await fast.prepare(Op.HEAD_OBJECT, {"Bucket": BUCKET, "Key": "k"})
        regions[BUCKET] = "eu-central-1"
        return before, await fast.prepare(Op.HEAD_OBJECT, {"Bucket": BUCKET, "Key": "k2"})
    before, after = anyio.run(run)
    assert before.url == f"https://{BUCKET}.s3.eu-west-1.amazonaws.com/k"
    assert after.url == f"https://{BUCKET}.s3.eu-central-1.amazonaws.com/k2"
    assert "/eu-central-1/s3/aws4_request" in after.headers["Authorization"]
