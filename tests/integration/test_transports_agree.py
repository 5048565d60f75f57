"""Both transports return equal typed results for every operation the fast one carries, success and error,
against the real SeaweedFS (HTTPS, so SSE-C is allowed)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from engine.sandbox import SandboxInfo
from workers.errors import RekeyError
from workers.model import Encryption, Mode, ObjectHead, PartResult, SecretKey
from workers.s3 import S3, Attributes, CopyRequest, CreateUpload, Directive, Endpoint, PutRequest, Source

KEY_A = Encryption(Mode.SSE_C, sse_c_key=SecretKey(bytes(range(32)), "a"))
KEY_B = Encryption(Mode.SSE_C, sse_c_key=SecretKey(bytes(range(1, 33)), "b"))
PART = 5 * 1024 * 1024
Step = Callable[[S3, str, str], Awaitable[Any]]


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def _put(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.put(PutRequest(bucket, f"{tag}/plain", b"hello", content_md5=_md5(b"hello"),
                                   attributes=Attributes(metadata={"note": "a b"}, content_type="text/x"),
                                   tags={"t": "1"}))


async def _put_sse_c(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.put(PutRequest(bucket, f"{tag}/sse-c", b"secret", encryption=KEY_A))


async def _head(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.head(bucket, "shared/plain")


async def _head_sse_c(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.head(bucket, "shared/sse-c", read_enc=KEY_A)


async def _get_range(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.get_range(bucket, "shared/plain", 1, 3)


async def _get(s3: S3, bucket: str, tag: str) -> Any:
    got = await s3.get(bucket, "shared/sse-c", read_enc=KEY_A)
    return got.data, got.head


async def _copy(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.copy(CopyRequest(bucket, f"{tag}/copy", Source(bucket, "shared/sse-c", encryption=KEY_A),
                                     encryption=KEY_B, attributes=Attributes(metadata={"m": "1"})))


async def _copy_directive(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.copy(CopyRequest(bucket, f"{tag}/copy2", Source(bucket, "shared/plain"),
                                     encryption=Encryption(Mode.SSE_S3), metadata_directive=Directive.COPY))


async def _multipart(s3: S3, bucket: str, tag: str) -> Any:
    key = f"{tag}/mp"
    upload_id = await s3.create_upload(CreateUpload(bucket, key))
    data = bytes(PART)
    first = await s3.upload_part(bucket, key, upload_id, 1, data, content_md5=_md5(data))
    second = await s3.upload_part_copy(bucket, key, upload_id, 2, Source(bucket, "shared/plain"), 0, 4)
    done = await s3.complete_upload(bucket, key, upload_id, [first, second])
    return first, second, done, await s3.head(bucket, key)


async def _parts_listed_then_aborted(s3: S3, bucket: str, tag: str) -> Any:
    key = f"{tag}/aborted"
    upload_id = await s3.create_upload(CreateUpload(bucket, key))
    data = bytes(PART)
    part = await s3.upload_part(bucket, key, upload_id, 1, data, content_md5=_md5(data))
    listed = await s3.list_parts(bucket, key, upload_id)
    await s3.abort_upload(bucket, key, upload_id)
    return part, listed


async def _delete(s3: S3, bucket: str, tag: str) -> Any:
    await s3.put(PutRequest(bucket, f"{tag}/gone", b"x"))
    return await s3.delete(bucket, f"{tag}/gone")


async def _head_bucket(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.head_bucket(bucket)


async def _website(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.bucket_website(bucket)


# (Not "a//b": SeaweedFS lists such a key as "a/b".)
LISTED = ["listed/a b.txt", "listed/ünï/ключ", "listed/a+b=c", "listed/100%/x%20y", "listed/~t", "listed/f/"]


async def _tags(s3: S3, bucket: str, tag: str) -> Any:
    await s3.put_tags(bucket, "shared/plain", {"a b": "c&d<e>", "ünï": "ключ", "k": ""})
    return await s3.get_tags(bucket, "shared/plain"), await s3.get_tags(bucket, f"{tag}/plain")


async def _tags_missing(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.get_tags(bucket, "no/such key")


async def _list(s3: S3, bucket: str, tag: str) -> Any:
    first = await s3.list_page(bucket, prefix="listed/", max_keys=3)
    rest = await s3.list_page(bucket, prefix="listed/", token=first.next_token)
    after = await s3.list_page(bucket, prefix="listed/", start_after="listed/a b.txt")
    return first.refs, first.truncated, rest.refs, rest.truncated, after.refs


# errors
async def _head_missing(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.head(bucket, "no/such key")


async def _head_sse_c_without_key(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.head(bucket, "shared/sse-c")


async def _get_wrong_key(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.get_range(bucket, "shared/sse-c", 0, 1, read_enc=KEY_B)


async def _get_changed(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.get_range(bucket, "shared/plain", 0, 1, if_match='"0123456789abcdef0123456789abcdef"')


async def _copy_changed(s3: S3, bucket: str, tag: str) -> Any:
    stale = '"00000000000000000000000000000000"'
    return await s3.copy(CopyRequest(bucket, f"{tag}/c", Source(bucket, "shared/plain", if_match=stale)))


async def _copy_missing(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.copy(CopyRequest(bucket, f"{tag}/c", Source(bucket, "no/such key")))


async def _put_no_bucket(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.put(PutRequest(bucket + "-missing", "k", b"x"))


async def _website_missing_bucket(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.bucket_website(f"{bucket}-missing")


async def _head_bucket_missing(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.head_bucket(bucket + "-missing")


async def _part_no_upload(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.upload_part(bucket, f"{tag}/x", "no-such-upload", 1, b"x")


async def _complete_no_upload(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.complete_upload(bucket, f"{tag}/x", "no-such-upload", [PartResult(1, '"abc"', 1)])


async def _list_parts_no_upload(s3: S3, bucket: str, tag: str) -> Any:
    return await s3.list_parts(bucket, f"{tag}/x", "no-such-upload")


STEPS: list[Step] = [_put, _put_sse_c, _head, _head_sse_c, _get_range, _get, _copy, _copy_directive, _multipart,
                     _parts_listed_then_aborted,
                     _delete, _head_bucket, _website, _list, _tags, _tags_missing, _head_missing,
                     _head_sse_c_without_key, _get_wrong_key, _get_changed,
                     _copy_changed, _copy_missing, _put_no_bucket, _head_bucket_missing, _website_missing_bucket,
                     _part_no_upload, _complete_no_upload, _list_parts_no_upload]


def _outcome(result: Any) -> Any:
    """A result, or an error as what a user sees of it (class, one line, code, status)."""
    if isinstance(result, RekeyError):
        return type(result).__name__, str(result), result.code, result.status
    return result


def _without_times(value: Any) -> Any:
    """Two writes of the same bytes differ only in when they were made."""
    if isinstance(value, tuple):
        return tuple(_without_times(v) for v in value)
    if isinstance(value, ObjectHead):
        return dataclasses.replace(value, last_modified=None)
    return value


def test_both_transports_return_equal_records(sandbox: SandboxInfo, s3_http: Any, bucket: str) -> None:
    s3_http.put_object(Bucket=bucket, Key="shared/plain", Body=b"hello")
    for key in LISTED:
        s3_http.put_object(Bucket=bucket, Key=key, Body=key.encode())

    async def run(fast: bool) -> tuple[list[Any], dict[str, int]]:
        endpoint = Endpoint(endpoint_url=sandbox.s3_https, region=sandbox.region, ca_bundle=sandbox.ca_bundle,
                            lean=fast)
        tag = "t"   # the same keys: the second run rewrites what the first wrote, with the same bytes
        out: list[Any] = []
        async with S3.open(endpoint) as s3:
            await s3.put(PutRequest(bucket, "shared/sse-c", b"secret", encryption=KEY_A))
            for step in STEPS:
                try:
                    result = await step(s3, bucket, tag)
                except RekeyError as exc:
                    result = exc
                out.append(_without_times(_outcome(result)))
            return out, dict(s3.requests_by_transport)

    fast, fast_counts = anyio.run(run, True)
    slow, slow_counts = anyio.run(run, False)
    for step, a, b in zip(STEPS, fast, slow, strict=True):
        assert a == b, step.__name__
    listed = fast[STEPS.index(_list)]
    assert [r.key for r in [*listed[0], *listed[2]]] == sorted(LISTED) and listed[1] and not listed[3]
    assert fast_counts["fast"] > 20 and slow_counts["fast"] == 0
    errors = [r for r in fast if isinstance(r, tuple) and len(r) == 4 and isinstance(r[0], str)]
    assert {e[0] for e in errors} >= {"ObjectGoneError", "KeyRequiredError", "WrongKeyError",
                                     "ObjectChangedError", "BucketMissingError"}
