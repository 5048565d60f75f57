"""rekey's own request builder (workers.s3.native) sends exactly what the fast transport (botocore's
machinery) sends: method, URL, every header, the signature and the body, for every call it builds; and it
builds none it cannot prove (SSE-C, a learned region, an unknown parameter, a setup that is not plain)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from tests.unit.test_fast_parity import BUCKET, KEYS, KMS, SSE_C, VERSION, requests_for
from workers.model import Encryption, Mode
from workers.s3 import Attributes, CopyRequest, Directive, Endpoint, PutRequest, Source
from workers.s3 import convert as cv
from workers.s3.fast import FastTransport
from workers.s3.hosts import host_header
from workers.s3.native import _OPS, _PARAMS, Native
from workers.s3.ops import Op
from workers.s3.sdk_sync import fast_client

ENDPOINTS = {
    "http-us-west-2": Endpoint(endpoint_url="http://127.0.0.1:9000", region="us-west-2"),
    "https-default-port": Endpoint(endpoint_url="https://s3.example.test/", region="eu-west-1"),
    "ipv6-literal": Endpoint(endpoint_url="http://[::1]:8333"),
    "aws-eu-west-1": Endpoint(region="eu-west-1"),
    "aws-us-east-1": Endpoint(),
}
ENV = {"AWS_ACCESS_KEY_ID": "ASIAEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY": "secret/with+chars",
       "AWS_SESSION_TOKEN": "token//with==padding", "AWS_CONFIG_FILE": "/nonexistent",
       "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
CLOCK = dt.datetime(2026, 12, 1, 9, 0, 0)


@pytest.fixture(autouse=True)
def frozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One environment, one clock and one invocation id for both builders."""
    import os
    for name in list(os.environ):
        if name.upper().startswith("AWS_") or name.lower().endswith("_proxy") or name == "REQUESTS_CA_BUNDLE":
            monkeypatch.delenv(name)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda **_: CLOCK)
    monkeypatch.setattr("workers.s3.native._now", lambda: CLOCK)
    fixed = uuid.UUID("12345678-1234-5678-1234-567812345678")
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    yield


def s1_calls(key: str) -> list[tuple[Op, dict[str, Any]]]:
    """What a bucket-to-bucket run and its probes send (workers.core, workers.probes)."""
    src = Source("other-bucket", key, if_match='"a9fc"')
    return [
        (Op.COPY_OBJECT, cv.copy_params(CopyRequest(BUCKET, key, src, encryption=Encryption(Mode.SSE_S3),
                                                    metadata_directive=Directive.COPY))),
        (Op.COPY_OBJECT, cv.copy_params(CopyRequest(BUCKET, key, Source(BUCKET, key, version_id=VERSION),
                                                    encryption=KMS, metadata_directive=Directive.COPY))),
        (Op.PUT_OBJECT, cv.put_params(PutRequest(BUCKET, key, b"probe", encryption=Encryption(Mode.SSE_S3),
                                                 tags={"rekey-probe": "tags kept"}))),
        (Op.PUT_OBJECT, cv.put_params(PutRequest(BUCKET, key, b"", encryption=KMS,
                                                 attributes=Attributes(metadata={"a": "b"}, content_type="x/y")))),
        (Op.LIST_OBJECTS_V2, {"Bucket": BUCKET, "Prefix": "", "MaxKeys": 1000}),
        (Op.LIST_OBJECTS_V2, {"Bucket": BUCKET, "Prefix": key, "Delimiter": "/", "FetchOwner": True,
                              "EncodingType": "url"}),
        (Op.HEAD_OBJECT, {"Bucket": BUCKET, "Key": key, "IfMatch": '"e"', "PartNumber": 1}),
        (Op.DELETE_OBJECT, {"Bucket": BUCKET, "Key": key}),
        (Op.GET_OBJECT, {"Bucket": BUCKET, "Key": key, "VersionId": VERSION, "Range": "bytes=0-9", "IfMatch": '"e"'}),
    ]


def _features_sorted(user_agent: str) -> str:
    """botocore lists the User-Agent's features (m/...) in the order they were met, which varies."""
    return " ".join("m/" + ",".join(sorted(p[2:].split(","))) if p.startswith("m/") else p
                    for p in user_agent.split(" "))


def _shape(prepared: Any) -> dict[str, Any]:
    headers = dict(prepared.headers)
    headers["User-Agent"] = _features_sorted(headers["User-Agent"])
    return {"method": prepared.method, "url": prepared.url, "headers": headers,
            "body": bytes(prepared.body) if prepared.body is not None else None,
            "url_encoded_keys": prepared.url_encoded_keys}


async def _both(endpoint: Endpoint, calls: list[tuple[Op, dict[str, Any]]]) -> list[tuple[Any, Any]]:
    fast = FastTransport(fast_client(endpoint), {})
    native = Native.of(endpoint)
    assert native is not None
    out = []
    for op, params in calls:
        mine = native.prepare(op, dict(params))
        theirs = await fast.prepare(op, dict(params))
        out.append((None if mine is None else _shape(mine), _shape(theirs)))
    fast.close()
    return out


@pytest.mark.parametrize("where", ENDPOINTS)
def test_native_requests_equal_the_fast_transports(where: str) -> None:
    calls = [(op, params) for key in KEYS for op, params in requests_for(key) + s1_calls(key)]
    sent = anyio.run(_both, ENDPOINTS[where], calls)
    built: list[Op] = []
    for (mine, theirs), (op, params) in zip(sent, calls, strict=True):
        if mine is None:
            # only what it must not build: SSE-C keys, operations it does not carry
            assert op not in _OPS or any(k.startswith(("SSECustomer", "CopySourceSSECustomer")) for k in params), \
                (op, sorted(params))
            continue
        built.append(op)
        assert mine == theirs, (op, params.get("Key"))
        assert mine["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEKEY/")
    assert set(built) == set(_OPS)   # every operation it carries was compared, for every key
    assert all(built.count(op) >= len(KEYS) for op in _OPS)


def test_the_parameter_table_is_s3s_model() -> None:
    """Every parameter built here goes where S3's model puts it, under its name."""
    model = fast_client(ENDPOINTS["http-us-west-2"]).meta.service_model
    for op, params in _PARAMS.items():
        shape = model.operation_model(model.operation_names[[
            n for n in model.operation_names].index(_api_name(op))]).input_shape
        for name, (where, location_name) in params.items():
            member = shape.members[name]
            assert member.serialization.get("location") == ("querystring" if where == "query" else "header"), name
            assert member.serialization.get("name") == location_name, (op, name)


def _api_name(op: Op) -> str:
    return "".join(part.capitalize() for part in op.value.split("_")).replace("V2", "V2")


def test_host_header_is_botocores() -> None:
    from botocore.auth import _host_from_url
    for url in ("http://127.0.0.1:9000/b/k", "https://S3.Example.test:443/b", "http://[::1]:8333/b?x",
                "http://h:80/", "https://h:8443"):
        assert host_header(url) == _host_from_url(url)


@pytest.mark.parametrize("change", [
    {"AWS_PROFILE": "other"}, {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1"}, {"HTTPS_PROXY": "http://p:3128"},
    {"AWS_ACCESS_KEY_ID": ""}, {"AWS_S3_ADDRESSING_STYLE": "virtual"},
    {"AWS_SDK_UA_APP_ID": "x"}, {"AWS_CA_BUNDLE": " "}, {"REQUESTS_CA_BUNDLE": ""},
    {"AWS_CREDENTIAL_EXPIRATION": "2026-12-01T10:00:00Z"}])
def test_a_setup_that_is_not_plain_is_left_to_botocore(change: dict[str, str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    assert Native.of(ENDPOINTS["http-us-west-2"]) is None


def test_aws_is_addressed_virtual_hosted_and_other_names_are_left_to_botocore() -> None:
    native = Native.of(ENDPOINTS["aws-eu-west-1"])
    assert native is not None
    head = native.prepare(Op.HEAD_OBJECT, {"Bucket": BUCKET, "Key": "a b"})
    assert head is not None and head.url == f"https://{BUCKET}.s3.eu-west-1.amazonaws.com/a%20b"
    for name in ("dotted.bucket", "ab", "Upper", "x--x-s3", "under_score"):   # path-style, S3 Express, invalid
        assert native.prepare(Op.HEAD_OBJECT, {"Bucket": name, "Key": "k"}) is None, name


@pytest.mark.parametrize("endpoint", [Endpoint(region="cn-north-1"), Endpoint(region="us-gov-west-1"),
                                      Endpoint(endpoint_url="http://h:1/base"),
                                      Endpoint(endpoint_url="http://h:99999"), Endpoint(endpoint_url="ftp://h:1"),
                                      Endpoint(endpoint_url="http://h:1", profile="p"),
                                      Endpoint(endpoint_url="http://h:1", lean=False)])
def test_endpoints_that_are_not_plain_are_left_to_botocore(endpoint: Endpoint) -> None:
    assert Native.of(endpoint) is None


def test_a_config_file_that_sets_more_than_a_region_is_left_to_botocore(tmp_path: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    config.write_text("[default]\nregion = eu-west-1\n# a comment\noutput = json\n")
    assert Native.of(ENDPOINTS["http-us-west-2"]) is not None
    config.write_text("[default]\nregion = eu-west-1\ns3 =\n  addressing_style = virtual\n")
    assert Native.of(ENDPOINTS["http-us-west-2"]) is None


def test_the_ca_bundle_is_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the wire verifies TLS with: AWS_CA_BUNDLE, else REQUESTS_CA_BUNDLE, else botocore's own bundle."""
    endpoint = ENDPOINTS["https-default-port"]
    assert Native.of(endpoint).ca_bundle is None   # type: ignore[union-attr]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/r.pem")
    assert Native.of(endpoint).ca_bundle == "/r.pem"   # type: ignore[union-attr]
    monkeypatch.setenv("AWS_CA_BUNDLE", "/a.pem")
    assert Native.of(endpoint).ca_bundle == "/a.pem"   # type: ignore[union-attr]
    client = fast_client(endpoint)
    assert client._endpoint.http_session._verify == "/a.pem"


def test_a_learned_region_an_arn_and_an_sse_c_key_are_left_to_botocore() -> None:
    native = Native.of(ENDPOINTS["http-us-west-2"])
    assert native is not None
    assert native.prepare(Op.HEAD_OBJECT, {"Bucket": BUCKET, "Key": "k"}, learned_region=True) is None
    assert native.prepare(Op.HEAD_OBJECT, {"Bucket": "arn:aws:s3:us-west-2:1:accesspoint/a", "Key": "k"}) is None
    assert native.prepare(Op.HEAD_OBJECT, {"Bucket": BUCKET, "Key": "k", **cv.key_params(SSE_C)}) is None
    assert native.prepare(Op.CREATE_MULTIPART_UPLOAD, {"Bucket": BUCKET, "Key": "k"}) is None
    assert "secret" not in repr(native)
