"""One multipart upload: create or resume, parts in parallel, journal each part, complete or abort."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from workers.errors import ObjectChangedError, RekeyError, leaves
from workers.job import Job, UploadResume
from workers.model import Encryption, ObjectRef, PartResult
from workers.parts import PartSpan
from workers.s3 import CreateUpload, Written

UploadPart = Callable[[str, PartSpan], Awaitable[PartResult]]


async def _resume(job: Job, ref: ObjectRef, *, bucket: str, key: str, kind: str,
                  part_size: int) -> tuple[str | None, dict[int, PartResult]]:
    """An earlier upload of this object to continue, with the parts both the journal and S3 agree on."""
    if job.journal is None:
        return None, {}
    point = await job.journal.resume_point(ref)
    if point is None:
        return None, {}
    usable = bool(point.upload_id) and point.kind == kind and point.part_size == part_size \
        and point.source_etag == ref.etag
    if usable:
        try:
            listed = await job.dest.list_parts(bucket, key, point.upload_id)
        except RekeyError:
            usable = False  # NoSuchUpload: aborted or expired meanwhile
        else:
            on_server = {p.part_number: p.etag for p in listed}
            done = {p.part_number: p for p in point.parts if on_server.get(p.part_number) == p.etag}
            return point.upload_id, done
    await abandon(job, ref, point)
    return None, {}


# Uploads initiated this long before the recorded intent are not ours (clock skew allowance).
INTENT_SKEW = 600.0


async def abandon(job: Job, ref: ObjectRef, point: UploadResume) -> None:
    """Abort an earlier upload of this object and forget it. For an intent (killed between
    CreateMultipartUpload and recording its id), abort the uploads of exactly that destination key
    initiated after the intent was recorded."""
    bucket, key = point.dest_bucket or job.dst.bucket, point.dest_key or job.dest_key(ref.key)
    if point.upload_id:
        await _abort(job, ref, bucket, key, point.upload_id)
        return
    with anyio.move_on_after(60, shield=True):
        try:
            uploads = await job.dest.list_uploads(bucket, key)
        except RekeyError:
            uploads = []
        for up in uploads:
            if up.key == key and (up.initiated is None or up.initiated >= point.created_at - INTENT_SKEW):
                try:
                    await job.dest.abort_upload(bucket, key, up.upload_id)
                except RekeyError:
                    pass
        if job.journal is not None:
            await job.journal.upload_ended(ref, "")


async def _intent(job: Job, ref: ObjectRef, *, bucket: str, key: str, part_size: int, kind: str) -> None:
    """Record that an upload is about to be created, before CreateMultipartUpload answers."""
    if job.journal is not None:
        await job.journal.upload_started(ref, upload_id="", dest_bucket=bucket, dest_key=key,
                                         part_size=part_size, source_etag=ref.etag, kind=kind)


async def _abort(job: Job, ref: ObjectRef, bucket: str, key: str, upload_id: str) -> None:
    """Abort an upload and forget it; shielded so a cancelled run still cleans up."""
    with anyio.move_on_after(30, shield=True):
        try:
            await job.dest.abort_upload(bucket, key, upload_id)
        except RekeyError:
            pass  # already gone; `rekey cleanup` lists any leftover
        if job.journal is not None:
            await job.journal.upload_ended(ref, upload_id)


async def run_multipart(
    job: Job,
    ref: ObjectRef,
    *,
    kind: str,
    part_size: int,
    spans: Sequence[PartSpan],
    create: CreateUpload,
    upload_part: UploadPart,
    complete_encryption: Encryption | None = None,
    complete_if_match: str | None = None,
    resumable: bool = True,
) -> tuple[Written, int]:
    """Upload `spans` with `upload_part` and complete. Returns (complete answer, parts reused).

    An upload interrupted by a crash is continued when the journal and ListParts agree on its parts;
    any failure other than cancellation aborts the upload before the error propagates.
    """
    bucket, key = create.bucket, create.key
    upload_id: str | None = None
    done: dict[int, PartResult] = {}
    if resumable:
        upload_id, done = await _resume(job, ref, bucket=bucket, key=key, kind=kind, part_size=part_size)
    elif job.journal is not None:
        point = await job.journal.resume_point(ref)
        if point is not None:
            await abandon(job, ref, point)
    if upload_id is None:
        await _intent(job, ref, bucket=bucket, key=key, part_size=part_size, kind=kind)
        upload_id = await job.dest.create_upload(create)
        if job.journal is not None:
            await job.journal.upload_started(ref, upload_id=upload_id, dest_bucket=bucket, dest_key=key,
                                             part_size=part_size, source_etag=ref.etag, kind=kind)
    reused = len(done)
    results: dict[int, PartResult] = dict(done)
    todo = [s for s in spans if s.number not in done]
    try:
        limiter = anyio.CapacityLimiter(max(1, job.part_concurrency))

        async def one(span: PartSpan) -> None:
            async with limiter:
                part = await upload_part(upload_id, span)
            results[span.number] = part
            if job.journal is not None:
                await job.journal.parts_done(upload_id, [part])

        async with anyio.create_task_group() as tg:
            for span in todo:
                tg.start_soon(one, span)
        resp = await job.dest.complete_upload(bucket, key, upload_id, list(results.values()),
                                              encryption=complete_encryption, if_match=complete_if_match)
    except BaseException as exc:
        await _fail(job, ref, bucket, key, upload_id, exc)  # cancellation: kept for the next run
        raise
    if job.journal is not None:
        await job.journal.upload_ended(ref, upload_id)
    return resp, reused


async def _fail(job: Job, ref: ObjectRef, bucket: str, key: str, upload_id: str, exc: BaseException) -> None:
    """An upload failed: abort it, and raise the most telling error of a failed task group. A cancelled
    upload is left as it is (journaled), for the next run to continue or abort."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return
    await _abort(job, ref, bucket, key, upload_id)
    if isinstance(exc, BaseExceptionGroup):
        first = _first_rekey_error(exc)
        if first is not None:
            raise first from None


def _first_rekey_error(group: BaseExceptionGroup[Any]) -> RekeyError | None:
    """The most telling error of a failed task group: a changed object first, else the first one."""
    flat = [e for e in leaves(group) if isinstance(e, RekeyError)]
    for e in flat:
        if isinstance(e, ObjectChangedError):
            return e
    return flat[0] if flat else None


SendPart = Callable[[int, bytes], Awaitable[None]]
ORDERED_UPLOADS = 2  # parts of one in-order (client-side) stream uploading at once


async def run_ordered_upload(
    job: Job,
    ref: ObjectRef,
    *,
    kind: str,
    part_size: int,
    create: CreateUpload,
    produce: Callable[[SendPart], Awaitable[object]],
    part_encryption: Encryption | None = None,
    complete_if_match: str | None = None,
) -> Written:
    """A multipart upload whose parts are produced in order (a GCM stream): `produce` calls
    `send_part(number, data)` for each; uploads run in parallel behind it, bounded by the job's
    part concurrency. Never resumed (the cipher state cannot be rebuilt): an earlier upload of the
    same object is aborted first. Any failure in `produce` (a bad tag) aborts the upload.
    `part_encryption` (an SSE-C key) goes with every part and the Complete."""
    bucket, key = create.bucket, create.key
    if job.journal is not None:
        point = await job.journal.resume_point(ref)
        if point is not None:
            await abandon(job, ref, point)
    await _intent(job, ref, bucket=bucket, key=key, part_size=part_size, kind=kind)
    upload_id = await job.dest.create_upload(create)
    if job.journal is not None:
        await job.journal.upload_started(ref, upload_id=upload_id, dest_bucket=bucket, dest_key=key,
                                         part_size=part_size, source_etag=ref.etag, kind=kind)
    results: dict[int, PartResult] = {}
    slots = anyio.Semaphore(max(1, min(ORDERED_UPLOADS, job.part_concurrency)))
    try:
        async with anyio.create_task_group() as tg:

            async def upload(number: int, data: bytes) -> None:
                try:
                    md5 = base64.b64encode(await anyio.to_thread.run_sync(lambda: hashlib.md5(data).digest())
                                           ).decode("ascii")
                    results[number] = await job.dest.upload_part(
                        bucket, key, upload_id, number, data, content_md5=md5, encryption=part_encryption)
                finally:
                    if job.write_memory is not None:
                        await job.write_memory.release(len(data))
                    slots.release()

            async def send_part(number: int, data: bytes) -> None:
                await slots.acquire()
                if job.write_memory is not None:
                    await job.write_memory.acquire(len(data))
                tg.start_soon(upload, number, data)

            await produce(send_part)
        done = await job.dest.complete_upload(bucket, key, upload_id, list(results.values()),
                                              encryption=part_encryption, if_match=complete_if_match)
    except BaseException as exc:
        await _fail(job, ref, bucket, key, upload_id, exc)
        raise
    if job.journal is not None:
        await job.journal.upload_ended(ref, upload_id)
    return done
