"""Streamed re-encryption of one object: ranged GETs through rekey, then PutObject or parallel UploadParts.

Used when the server cannot copy (different endpoints or credentials, a copy form it refuses).
Memory is bounded by the job's byte budget: a part is reserved before it is read.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import anyio

from workers import learned
from workers.errors import ObjectChangedError, ObjectGoneError, RekeyError
from workers.job import Job
from workers.model import Encryption, Mode, ObjectHead, ObjectRef, PartResult
from workers.multipart import run_multipart
from workers.parts import PartSpan, adjust_part_size, split
from workers.s3 import Attributes, CreateUpload, PutRequest, Written
from workers.serverside import dest_key_enc, source_tags, write_guard

log = logging.getLogger("rekey.stream")

_OFFLOAD = 1024 * 1024  # hash buffers larger than this in a worker thread
CAP_IF_MATCH_UNQUOTED = "if_match_unquoted"   # True once the server refused the quoted ETag of an unchanged object
_GUARDED_WRITES = frozenset({"put_object", "complete_multipart_upload"})


@dataclass(frozen=True, slots=True)
class StreamResult:
    written: Written
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


async def read_range(job: Job, ref: ObjectRef, head: ObjectHead, start: int, end: int,
                     held: bytes | None = None) -> bytes:
    if held is not None:   # the source's bytes, read before a write that damaged the object (in place)
        return held[start:end + 1]
    enc = source_read_enc(job, head)
    return await job.source.get_range(job.src.bucket, ref.key, start, end, read_enc=enc, if_match=head.etag,
                                     version_id=ref.version_id)


async def stream_copy(job: Job, ref: ObjectRef, head: ObjectHead, *, tags: Mapping[str, str] | None = None,
                      held: bytes | None = None) -> StreamResult:
    """Copy through the client, re-encrypting server-side on the way in (no client-side transform).
    `tags`: the source's tags as read before any write (read here when not given). `held`: the source's
    bytes, when a write that damaged it (in place) left them only in memory.

    In place the final write carries If-Match. A 412 to it while the object's ETag is still the one
    read means the server wants the other form of the ETag (RGW 16 matches only the unquoted one): the
    other form is learned for the run and the write is done again; a real change stays a 412."""
    if tags is None:
        tags = await source_tags(job, ref, head)
    unquoted = learned.known(job, CAP_IF_MATCH_UNQUOTED) is True
    try:
        return await _stream_copy(job, ref, head, tags, unquoted=unquoted, held=held)
    except ObjectChangedError as exc:
        if isinstance(exc, ObjectGoneError) or exc.op not in _GUARDED_WRITES or not replace_guard(job, head) \
                or not await _unchanged(job, ref, head):
            raise
    log.info("%s: If-Match with the %s ETag refused although the object is unchanged: using the other form",
             ref.key, "unquoted" if unquoted else "quoted")
    await learned.learn(job, CAP_IF_MATCH_UNQUOTED, not unquoted)
    return await _stream_copy(job, ref, head, tags, unquoted=not unquoted, held=held)


async def _unchanged(job: Job, ref: ObjectRef, head: ObjectHead) -> bool:
    """Is the object still the one that was read (same ETag on a fresh HEAD)?"""
    try:
        again = await job.source.head(
            job.src.bucket, ref.key, read_enc=source_read_enc(job, head), version_id=ref.version_id)
    except RekeyError:
        return False
    return again.etag == head.etag


async def _stream_copy(job: Job, ref: ObjectRef, head: ObjectHead, tags: Mapping[str, str], *,
                       unquoted: bool, held: bytes | None) -> StreamResult:
    dest_key = job.dest_key(ref.key)
    attributes = Attributes.of(head)
    guard = replace_guard(job, head, unquoted=unquoted)
    if head.size <= job.single_put_max:
        async with reserved(job, head.size):
            body = await read_range(job, ref, head, 0, head.size - 1, held) if head.size else b""
            req = PutRequest(job.dst.bucket, dest_key, body, content_md5=await content_md5(body),
                             encryption=job.target, attributes=attributes, tags=tags, if_match=guard)
            written = await job.dest.put(req)
        return StreamResult(written, 0, 2 * head.size)

    part_size = adjust_part_size(head.size, job.part_size)
    dest_enc = dest_key_enc(job)
    moved = 0

    async def upload_part(upload_id: str, span: PartSpan) -> PartResult:
        nonlocal moved
        async with reserved(job, span.size):
            data = await read_range(job, ref, head, span.start, span.end, held)
            md5 = await content_md5(data)
            part = await job.dest.upload_part(
                job.dst.bucket, dest_key, upload_id, span.number, data, content_md5=md5, encryption=dest_enc)
        moved += 2 * span.size
        return part

    written, reused = await run_multipart(
        job, ref, kind="stream", part_size=part_size, spans=split(head.size, part_size),
        create=CreateUpload(job.dst.bucket, dest_key, encryption=job.target, attributes=attributes, tags=tags),
        upload_part=upload_part, complete_encryption=dest_enc, complete_if_match=guard)
    return StreamResult(written, reused, moved)


def replace_guard(job: Job, head: ObjectHead, *, unquoted: bool = False) -> str | None:
    """In place, the final write replaces the object only if it is still the one that was read: a
    concurrent overwrite gives 412 (recorded as changed), never a clobber. `unquoted`: the ETag without
    its quotes, for servers that match only that form. Left out where the server was found to ignore
    If-Match (see `workers.serverside.write_guard`)."""
    etag = write_guard(job, head)
    if etag is None:
        return None
    return etag.strip('"') if unquoted else etag
