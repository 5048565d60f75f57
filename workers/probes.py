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
from workers.s3 import S3, CreateUpload, PutRequest, Source

PROBE_MARKER = ".rekey-probe-"
T = TypeVar("T")


class UnsafeTargetError(FatalError):
    """The endpoint accepts the target encryption but does not apply it."""


async def check_bucket(s3: S3, bucket: str, role: str) -> None:
    """HeadBucket: a missing or inaccessible bucket stops the run before any object is touched."""
    try:
        await s3.head_bucket(bucket)
    except ObjectChangedError:  # 404 on a bucket
        raise BucketMissingError(f"{role} bucket does not exist", bucket=bucket, op="head_bucket") from None
    except ObjectError as exc:
        # HEAD answers have no body, so no error code: ask once more with a body to tell refused
        # credentials from a denied bucket.
        try:
            await s3.list_page(bucket, max_keys=0)
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
        return await s3.bucket_website(bucket)   # False: NoSuchWebsiteConfiguration (404)
    except UnsupportedError:  # not implemented
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
        await _retried(retry, "probe put", lambda: s3.put(PutRequest(bucket, key, b"rekey probe",
                                                                    encryption=target)))
    except (FatalError, RetryableError):
        raise  # not an answer about the encryption
    except RekeyError as exc:
        return None if "denied" in exc.message.lower() else f"PutObject with the target encryption failed: {exc}"
    try:
        head = await _retried(retry, "probe head", lambda: s3.head(bucket, key, read_enc=read))
        return sse.mismatch(head.encryption, target)
    finally:
        try:
            await _retried(retry, "probe delete", lambda: s3.delete(bucket, key))
        except RekeyError:
            pass


async def probe_part_copy_into_sse_c(s3: S3, bucket: str, prefix: str, target: Encryption, *,
                                     retry: Retrier | None = None) -> bool:
    """Does UploadPartCopy into an SSE-C destination give a readable object? (SeaweedFS: no.)"""
    src_key, dst_key = probe_key(prefix), probe_key(prefix)
    size = 5 * 1024 * 1024 + 64
    data = os.urandom(size)
    try:
        await _retried(retry, "probe put", lambda: s3.put(PutRequest(bucket, src_key, data)))
        upload_id = await s3.create_upload(CreateUpload(bucket, dst_key, encryption=target))
        try:
            parts = []
            for number, (start, end) in enumerate(((0, 5 * 1024 * 1024 - 1), (5 * 1024 * 1024, size - 1)), 1):
                parts.append(await s3.upload_part_copy(bucket, dst_key, upload_id, number, Source(bucket, src_key),
                                                       start, end, encryption=target))
            await s3.complete_upload(bucket, dst_key, upload_id, parts, encryption=target)
        except RekeyError:
            await s3.abort_upload(bucket, dst_key, upload_id)
            return False
        # Read it all back: SeaweedFS serves some ranges of such an object and fails on others.
        try:
            got = (await s3.get(bucket, dst_key, read_enc=target)).data
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
                await s3.delete(bucket, key)
            except RekeyError:
                pass
