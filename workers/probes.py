"""Small checks of what an endpoint really does, on scratch keys, before trusting it with real objects."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from workers import sse
from workers.errors import (
    AccessDeniedError,
    BucketMissingError,
    CredentialsError,
    FatalError,
    ObjectChangedError,
    ObjectError,
    RekeyError,
    RetryableError,
    UnsupportedError,
)
from workers.job import Retrier
from workers.model import Encryption, Mode
from workers.s3 import S3

PROBE_MARKER = ".rekey-probe-"
T = TypeVar("T")


class UnsafeTargetError(FatalError):
    """The endpoint accepts the target encryption but does not apply it."""


async def check_bucket(s3: S3, bucket: str, role: str) -> None:
    """HeadBucket: a missing or inaccessible bucket stops the run before any object is touched."""
    try:
        await s3.call("head_bucket", bucket=bucket, Bucket=bucket)
    except ObjectChangedError:  # 404 on a bucket
        raise BucketMissingError(f"{role} bucket does not exist", bucket=bucket, op="head_bucket") from None
    except ObjectError as exc:
        # HEAD answers have no body, so no error code: ask once more with a body to tell refused
        # credentials from a denied bucket.
        try:
            await s3.call("list_objects_v2", bucket=bucket, Bucket=bucket, MaxKeys=0)
        except FatalError:
            raise
        except RekeyError:
            pass
        raise AccessDeniedError(f"{role} bucket is not accessible: {exc.message}", bucket=bucket,
                                op="head_bucket") from None


async def website_configured(s3: S3, bucket: str) -> bool:
    """GetBucketWebsite: True when the bucket serves a website, or when that cannot be told (denied).
    A CopyObject with the COPY metadata directive drops x-amz-website-redirect-location on AWS."""
    try:
        await s3.call("get_bucket_website", bucket=bucket, Bucket=bucket)
    except (ObjectChangedError, UnsupportedError):  # NoSuchWebsiteConfiguration (404), or not implemented
        return False
    except CredentialsError:
        raise
    except RekeyError:
        return True
    return True


def probe_key(prefix: str) -> str:
    return f"{prefix}{PROBE_MARKER}{uuid.uuid4().hex}"


async def _retried(retry: Retrier | None, what: str, fn: Callable[[], Awaitable[T]]) -> T:
    """Probes go through the engine's retry policy: a throttled probe is retried, never taken as an answer."""
    return await retry(what, fn) if retry is not None else await fn()


async def probe_target(s3: S3, bucket: str, prefix: str, target: Encryption, *,
                       retry: Retrier | None = None) -> str | None:
    """PUT a scratch object with the target encryption, HEAD it, delete it.

    Returns None when the server applied the encryption, or the reason it did not. An access
    error (a policy on the scratch key) makes the probe inconclusive: None, and per-object
    verification still catches a wrong result.
    """
    key = probe_key(prefix)
    read = target if target.mode == Mode.SSE_C else None
    try:
        await _retried(retry, "probe put", lambda: s3.call(
            "put_object", bucket=bucket, key=key, sse_c=target.mode == Mode.SSE_C, Bucket=bucket, Key=key,
            Body=b"rekey probe", **sse.write_params(target)))
    except (FatalError, RetryableError):
        raise  # not an answer about the encryption
    except RekeyError as exc:
        return None if "denied" in exc.message.lower() else f"PutObject with the target encryption failed: {exc}"
    try:
        head = await _retried(retry, "probe head", lambda: s3.head(bucket, key, read_enc=read))
        return sse.mismatch(head.encryption, target)
    finally:
        try:
            await _retried(retry, "probe delete", lambda: s3.call("delete_object", bucket=bucket, key=key,
                                                                  Bucket=bucket, Key=key))
        except RekeyError:
            pass


async def probe_part_copy_into_sse_c(s3: S3, bucket: str, prefix: str, target: Encryption, *,
                                     retry: Retrier | None = None) -> bool:
    """Does UploadPartCopy into an SSE-C destination give a readable object? (SeaweedFS: no.)"""
    src_key, dst_key = probe_key(prefix), probe_key(prefix)
    size = 5 * 1024 * 1024 + 64
    data = os.urandom(size)
    keyp = sse.customer_key_params(target)
    try:
        await _retried(retry, "probe put", lambda: s3.call("put_object", bucket=bucket, key=src_key,
                                                           Bucket=bucket, Key=src_key, Body=data))
        up = await s3.call("create_multipart_upload", bucket=bucket, key=dst_key, sse_c=True, Bucket=bucket,
                           Key=dst_key, **sse.write_params(target))
        upload_id = up["UploadId"]
        try:
            parts = []
            for number, (start, end) in enumerate(((0, 5 * 1024 * 1024 - 1), (5 * 1024 * 1024, size - 1)), 1):
                r = await s3.call("upload_part_copy", bucket=bucket, key=dst_key, sse_c=True, Bucket=bucket,
                                  Key=dst_key, UploadId=upload_id, PartNumber=number,
                                  CopySource={"Bucket": bucket, "Key": src_key},
                                  CopySourceRange=f"bytes={start}-{end}", **keyp)
                parts.append({"PartNumber": number, "ETag": r["CopyPartResult"]["ETag"]})
            await s3.call("complete_multipart_upload", bucket=bucket, key=dst_key, Bucket=bucket, Key=dst_key,
                          UploadId=upload_id, MultipartUpload={"Parts": parts}, **keyp)
        except RekeyError:
            await s3.abort_upload(bucket, dst_key, upload_id)
            return False
        # Read it all back: SeaweedFS serves some ranges of such an object and fails on others.
        try:
            got, _ = await s3.get_all(bucket, dst_key, read_enc=target)
        except RekeyError:
            return False  # SeaweedFS answers 500 here: unreadable is the answer, not a passing fault
        return got == data
    except (FatalError, RetryableError):
        raise
    except RekeyError:
        return False
    finally:
        for key in (src_key, dst_key):
            try:
                await s3.call("delete_object", bucket=bucket, key=key, Bucket=bucket, Key=key)
            except RekeyError:
                pass
