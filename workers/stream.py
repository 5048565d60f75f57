"""Streamed re-encryption of one object: ranged GETs through rekey, then PutObject or parallel UploadParts.

Used when the server cannot copy (different endpoints or credentials, a copy form it refuses).
Memory is bounded by the job's byte budget: a part is reserved before it is read.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio

from workers import sse
from workers.job import Job
from workers.model import Encryption, Mode, ObjectHead, ObjectRef, PartResult
from workers.multipart import run_multipart
from workers.parts import PartSpan, adjust_part_size, split
from workers.s3 import carried_params
from workers.serverside import tagging_param

_OFFLOAD = 1024 * 1024  # hash buffers larger than this in a worker thread


@dataclass(frozen=True, slots=True)
class StreamResult:
    response: dict[str, Any]
    parts_reused: int
    bytes_through_client: int


def source_read_enc(job: Job, head: ObjectHead) -> Encryption | None:
    if head.encryption.mode == Mode.SSE_C and job.source_sse_c_key is not None:
        return Encryption(Mode.SSE_C, sse_c_key=job.source_sse_c_key)
    return None


async def content_md5(data: bytes) -> str:
    if len(data) > _OFFLOAD:
        digest = await anyio.to_thread.run_sync(lambda: hashlib.md5(data).digest())
    else:
        digest = hashlib.md5(data).digest()
    return base64.b64encode(digest).decode("ascii")


@contextlib.asynccontextmanager
async def reserved(job: Job, nbytes: int) -> AsyncIterator[None]:
    if job.memory is None:
        yield
        return
    async with job.memory.reserve(nbytes):
        yield


async def read_range(job: Job, ref: ObjectRef, head: ObjectHead, start: int, end: int) -> bytes:
    enc = source_read_enc(job, head)
    return await job.retried(
        f"get {ref.key} bytes {start}-{end}",
        lambda: job.source.get_range(job.src.bucket, ref.key, start, end, read_enc=enc, if_match=head.etag,
                                     version_id=ref.version_id))


async def stream_copy(job: Job, ref: ObjectRef, head: ObjectHead) -> StreamResult:
    """Copy through the client, re-encrypting server-side on the way in (no client-side transform)."""
    dest_key = job.dest_key(ref.key)
    dest_enc_params = sse.write_params(job.target)
    sse_c = job.target.mode == Mode.SSE_C or head.encryption.mode == Mode.SSE_C
    tagging = await tagging_param(job, ref)
    if head.size <= job.single_put_max:
        async with reserved(job, head.size):
            body = await read_range(job, ref, head, 0, head.size - 1) if head.size else b""
            md5 = await content_md5(body)
            resp = await job.retried(f"put {dest_key}", lambda: job.dest.call(
                "put_object", bucket=job.dst.bucket, key=dest_key, sse_c=sse_c, Bucket=job.dst.bucket,
                Key=dest_key, Body=body, ContentMD5=md5, **carried_params(head), **tagging, **dest_enc_params,
                **replace_guard(job, head)))
        return StreamResult(resp, 0, 2 * head.size)

    part_size = adjust_part_size(head.size, job.part_size)
    dest_key_params = sse.customer_key_params(job.target)
    moved = 0

    async def upload_part(upload_id: str, span: PartSpan) -> PartResult:
        nonlocal moved
        async with reserved(job, span.size):
            data = await read_range(job, ref, head, span.start, span.end)
            md5 = await content_md5(data)
            resp = await job.retried(f"part {span.number} of {dest_key}", lambda: job.dest.call(
                "upload_part", bucket=job.dst.bucket, key=dest_key, sse_c=sse_c, Bucket=job.dst.bucket,
                Key=dest_key, UploadId=upload_id, PartNumber=span.number, Body=data, ContentMD5=md5,
                **dest_key_params))
        moved += 2 * span.size
        return PartResult(span.number, str(resp["ETag"]), span.size)

    resp, reused = await run_multipart(
        job, ref, bucket=job.dst.bucket, key=dest_key, kind="stream", part_size=part_size,
        spans=split(head.size, part_size), create_params={**carried_params(head), **tagging, **dest_enc_params},
        upload_part=upload_part, complete_params={**dest_key_params, **replace_guard(job, head)})
    return StreamResult(resp, reused, moved)


def replace_guard(job: Job, head: ObjectHead) -> dict[str, Any]:
    """In place, the final write replaces the object only if it is still the one that was read: a
    concurrent overwrite gives 412 (recorded as changed), never a clobber."""
    return {"IfMatch": head.etag} if job.in_place and head.etag else {}
