"""Small checks of what an endpoint really does, on scratch keys, before trusting it with real objects."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

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
from workers.s3 import S3, Attributes, CopyRequest, CreateUpload, Directive, PutRequest, Source

T = TypeVar("T")
PROBE_MARKER = ".rekey-probe-"
SCRATCH_DELETE_SECONDS = 30


class UnsafeTargetError(FatalError):
    """The endpoint accepts the target encryption but does not apply it."""


class TargetRefusedError(FatalError):
    """The endpoint refuses writes in the target encryption (an unknown KMS key, encryption headers refused)."""


_KMS_MODES = (Mode.SSE_KMS, Mode.DSSE_KMS)


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


async def probe_target(s3: S3, bucket: str, prefix: str, target: Encryption) -> str | None:
    """PUT a scratch object with the target encryption, HEAD it, delete it.

    Returns None when the server applied the encryption, or the reason it did not. An access
    error (a policy on the scratch key) makes the probe inconclusive: None, and per-object
    verification still catches a wrong result.
    """
    key = probe_key(prefix)
    read = target if target.mode == Mode.SSE_C else None
    try:
        put = await s3.put(PutRequest(bucket, key, b"rekey probe", encryption=target))
    except (FatalError, RetryableError) as exc:
        if target.mode in _KMS_MODES and await _plain_put_works(s3, bucket, prefix):
            # Only the KMS key differs from a write the server takes with the same credentials: name the key,
            # not the server or the credentials (RGW answers an unknown key id with InvalidAccessKeyId).
            answer = exc.message.removeprefix("credentials refused: ")
            raise TargetRefusedError(
                f"target.kms_key_id: the server cannot encrypt with KMS key {target.kms_key_id} (does it exist, "
                f"and may the server use it?): {answer}", bucket=bucket, op="probe put") from None
        raise  # not an answer about the encryption
    except RekeyError as exc:
        if "denied" in exc.message.lower():
            return None  # a policy on the scratch key: inconclusive, per-object checks still run
        raise TargetRefusedError(f"the endpoint refuses {target.mode.value} writes: {exc.message}",
                                 bucket=bucket, op="probe put") from None
    try:
        head = await s3.head(bucket, key, read_enc=read)
        return sse.mismatch(head.encryption, target)
    finally:
        await delete_scratch(s3, bucket, key, put.version_id)


async def delete_scratch(s3: S3, bucket: str, key: str, version_id: str | None) -> None:
    """Delete a scratch object. In a versioned bucket the version written is deleted by its id: a plain
    DELETE would leave it and add a delete marker."""
    version = version_id if version_id and version_id != "null" else None
    with anyio.move_on_after(SCRATCH_DELETE_SECONDS, shield=True):   # also when the probe is cancelled
        try:
            await s3.delete(bucket, key, version_id=version)
        except RekeyError:
            pass


async def _plain_put_works(s3: S3, bucket: str, prefix: str) -> bool:
    """Does the server take a scratch PUT without encryption headers? (Tells a KMS key problem apart.)"""
    key = probe_key(prefix)
    try:
        put = await s3.put(PutRequest(bucket, key, b"rekey probe"))
    except RekeyError:
        return False
    await delete_scratch(s3, bucket, key, put.version_id)
    return True


PROBE_TAGS = {"rekey-probe": "tags kept"}


@dataclass(frozen=True, slots=True)
class TagAnswers:
    """What the tag probe learned; None: not asked, or inconclusive."""

    head_counts_tags: bool | None = None    # HeadObject reports x-amz-tagging-count
    copy_keeps_tags: bool | None = None     # CopyObject with TaggingDirective COPY keeps the tags


async def probe_tags(s3: S3, bucket: str, prefix: str, target: Encryption, *, copy: bool) -> TagAnswers:
    """On scratch objects in the destination, in the target encryption: does a HeadObject count an object's
    tags (then a source without tags needs no GetObjectTagging, nor its copy a check), and, with `copy`,
    does a CopyObject with TaggingDirective COPY keep them (then copy-first need not read sources' tags)?
    A refused or failed step leaves its answer None: the per-object checks stay."""
    src_key, dst_key = probe_key(prefix), probe_key(prefix)
    read = target if target.mode == Mode.SSE_C else None
    versions: dict[str, str | None] = {}
    counts: bool | None = None
    try:
        versions[src_key] = (await s3.put(PutRequest(bucket, src_key, b"rekey probe", encryption=target,
                                                     tags=PROBE_TAGS))).version_id
        counts = (await s3.head(bucket, src_key, read_enc=read)).tag_count == len(PROBE_TAGS)
        if not copy:
            return TagAnswers(counts)
        versions[dst_key] = (await s3.copy(CopyRequest(
            bucket, dst_key, Source(bucket, src_key, encryption=read), encryption=target,
            metadata_directive=Directive.COPY, tagging_directive=Directive.COPY))).version_id
        return TagAnswers(counts, await s3.get_tags(bucket, dst_key) == PROBE_TAGS)
    except RekeyError:
        return TagAnswers(counts)   # the target probe names what is wrong with the target, if anything
    finally:   # both, also when cancelled with the copy in flight (it may have been made)
        for key in (src_key, dst_key):
            if key in versions or copy:
                await delete_scratch(s3, bucket, key, versions.get(key))


async def probe_part_copy_into_sse_c(s3: S3, bucket: str, prefix: str, target: Encryption) -> bool:
    """Does UploadPartCopy into an SSE-C destination give a readable object? (SeaweedFS: no.)"""
    src_key, dst_key = probe_key(prefix), probe_key(prefix)
    size = 5 * 1024 * 1024 + 64
    data = os.urandom(size)
    versions: dict[str, str | None] = {}
    try:
        versions[src_key] = (await s3.put(PutRequest(bucket, src_key, data))).version_id
        upload_id = await s3.create_upload(CreateUpload(bucket, dst_key, encryption=target))
        try:
            parts = []
            for number, (start, end) in enumerate(((0, 5 * 1024 * 1024 - 1), (5 * 1024 * 1024, size - 1)), 1):
                parts.append(await s3.upload_part_copy(bucket, dst_key, upload_id, number, Source(bucket, src_key),
                                                       start, end, encryption=target))
            versions[dst_key] = (await s3.complete_upload(bucket, dst_key, upload_id, parts, encryption=target)
                                 ).version_id
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
            if key in versions or key == dst_key:
                await delete_scratch(s3, bucket, key, versions.get(key))


async def _retried(retry: Retrier | None, what: str, fn: Callable[[], Awaitable[T]]) -> T:
    """The boundary retries every request itself; `retry` only for callers that still hand one in."""
    return await retry(what, fn) if retry is not None else await fn()


async def probe_if_match(s3: S3, bucket: str, prefix: str, *,
                         retry: Retrier | None = None) -> dict[str, tuple[bool | None, str]]:
    """Does the endpoint honour If-Match on the writes rekey guards in place? On a scratch object,
    PutObject and CopyObject are each sent with an ETag that does not match: each must answer 412 and
    change nothing. Per operation ("PutObject", "CopyObject"): (True, ""), (False, what it did instead), or
    (None, why) when the probe could not tell (its scratch write was refused). Every version written is
    deleted by its id (nothing is left in a versioned bucket)."""
    key = probe_key(prefix)
    try:
        put = await _retried(retry, "probe put", lambda: s3.put(PutRequest(bucket, key, b"rekey probe")))
    except (FatalError, RetryableError):
        raise
    except RekeyError as exc:
        return {op: (None, f"scratch write refused: {exc.message}") for op in ("PutObject", "CopyObject")}
    written = [put.version_id]
    try:
        return await _stale_writes_refused(s3, bucket, key, retry, written)
    finally:
        for version_id in reversed(written):
            await delete_scratch(s3, bucket, key, version_id)


async def _stale_writes_refused(s3: S3, bucket: str, key: str, retry: Retrier | None,
                                written: list[str | None]) -> dict[str, tuple[bool | None, str]]:
    stale = '"00000000000000000000000000000000"'
    writes: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("PutObject", lambda: s3.put(PutRequest(bucket, key, b"overwritten", if_match=stale))),
        ("CopyObject", lambda: s3.copy(CopyRequest(bucket=bucket, key=key, source=Source(bucket, key),
                                                   attributes=Attributes(metadata={"p": "1"}), if_match=stale))),
    ]
    out: dict[str, tuple[bool | None, str]] = {}
    for op, write in writes:
        try:
            applied = await _retried(retry, f"probe {op}", write)
        except ObjectChangedError:
            out[op] = (True, "")   # 412: honoured
            continue
        except (FatalError, RetryableError):
            raise
        except RekeyError as exc:
            out[op] = (False, f"{op} with If-Match answered {exc.message}")
            continue
        written.append(applied.version_id)
        out[op] = (False, f"{op} with a stale If-Match was applied")
    return out
