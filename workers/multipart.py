"""One multipart upload: create or resume, parts in parallel, journal each part, complete or abort."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import anyio
from anyio.abc import TaskGroup

from workers.errors import RekeyError, most_telling
from workers.job import Job, UploadResume
from workers.memory import SLACK
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


def multipart_etag(parts: Sequence[PartResult]) -> str | None:
    """The ETag S3 gives the object these parts complete: the MD5 of their MD5s, then "-" and their count
    (None when a part's ETag is not an MD5)."""
    try:
        digests = b"".join(bytes.fromhex(p.etag.strip('"')) for p in sorted(parts, key=lambda p: p.part_number))
    except ValueError:
        return None
    if len(digests) != 16 * len(parts):
        return None
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"


async def adopt_completed(job: Job, ref: ObjectRef, point: UploadResume, etag: str | None) -> None:
    """In place, a run killed while its CompleteMultipartUpload was on the way leaves the upload completed on
    the server and its end unrecorded: the object now carries the ETag its recorded parts make. That is
    rekey's own write, journaled as such (ObjectJournal.written) so its outcome keeps the source's ETag
    and checksum as the proof `verify --deep` compares with."""
    objects = job.hooks.objects
    if not job.in_place or objects is None or not etag or not point.upload_id or not point.parts:
        return
    if etag.strip('"') == multipart_etag(point.parts):
        await objects.written(ref, etag)


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
        await job.journal.upload_ended(ref, upload_id, etag=resp.etag if job.in_place else None)
    return resp, reused


async def _fail(job: Job, ref: ObjectRef, bucket: str, key: str, upload_id: str, exc: BaseException) -> None:
    """An upload failed: abort it, and raise the most telling error of a failed task group. A cancelled
    upload is left as it is (journaled), for the next run to continue or abort."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return
    await _abort(job, ref, bucket, key, upload_id)
    if isinstance(exc, BaseExceptionGroup):
        first = most_telling(exc)
        if first is not None:
            raise first from None


ORDERED_UPLOADS = 2  # parts of one in-order (client-side) stream uploading at once


def part_body(buf: bytearray, length: int) -> bytes:
    """The first `length` bytes of a part buffer as a request body, without a copy. Both transports send
    any bytes-like body as it is (botocore wraps only `bytes` in a BytesIO, which aiohttp copies again);
    the S3 boundary types bodies as `bytes`."""
    return cast(bytes, memoryview(buf)[:length]) if length else b""


class _OrderedSink:
    """The parts of one in-order stream: buffers lent from the run's pool within the write budget,
    uploads in parallel behind the producer (at most ORDERED_UPLOADS, and the job's part concurrency)."""

    def __init__(self, job: Job, tg: TaskGroup, upload: Callable[[int, bytes], Awaitable[PartResult]],
                 part_size: int) -> None:
        self._job = job
        self._tg = tg
        self._upload = upload
        self._part_size = part_size
        self._slots = anyio.Semaphore(max(1, min(ORDERED_UPLOADS, job.part_concurrency)))
        self.results: dict[int, PartResult] = {}
        self.lent = 0   # buffers lent and not yet sent: their budget goes back if the stream fails

    async def buffer(self) -> bytearray:
        if self._job.write_memory is not None:
            await self._job.write_memory.acquire(self._part_size)
        self.lent += 1
        return self._job.buffers.take(self._part_size + SLACK)

    async def send(self, number: int, buf: bytearray, length: int) -> None:
        await self._slots.acquire()
        self.lent -= 1
        self._tg.start_soon(self._one, number, buf, length)

    async def _one(self, number: int, buf: bytearray, length: int) -> None:
        try:
            self.results[number] = await self._upload(number, part_body(buf, length))
        finally:
            await self._give_back(1)
            self._slots.release()
        self._job.buffers.give(buf)   # only after a finished upload: a failed one may still hold a view

    async def _give_back(self, buffers: int) -> None:
        if self._job.write_memory is not None and buffers:
            await self._job.write_memory.release(self._part_size * buffers)

    async def close(self) -> None:
        """Give back the budget of buffers lent and never sent (the stream failed)."""
        lent, self.lent = self.lent, 0
        await self._give_back(lent)


async def run_ordered_upload(
    job: Job,
    ref: ObjectRef,
    *,
    kind: str,
    part_size: int,
    create: CreateUpload,
    produce: Callable[[_OrderedSink], Awaitable[object]],
    part_encryption: Encryption | None = None,
    complete_if_match: str | None = None,
) -> Written:
    """A multipart upload whose parts are produced in order (a GCM stream): `produce` fills buffers the
    sink lends (`PartSink.buffer`) and sends them (`PartSink.send`); uploads run in parallel behind it.
    Never resumed (the cipher state cannot be rebuilt): an earlier upload of the same object is aborted
    first. Any failure in `produce` (a bad tag) aborts the upload. `part_encryption` (an SSE-C key) goes
    with every part and the Complete."""
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

    async def upload(number: int, body: bytes) -> PartResult:
        md5 = base64.b64encode(await anyio.to_thread.run_sync(lambda: hashlib.md5(body).digest())).decode("ascii")
        return await job.dest.upload_part(bucket, key, upload_id, number, body, content_md5=md5,
                                          encryption=part_encryption)

    try:
        async with anyio.create_task_group() as tg:
            sink = _OrderedSink(job, tg, upload, part_size)
            try:
                await produce(sink)
            finally:
                await sink.close()
        done = await job.dest.complete_upload(bucket, key, upload_id, list(sink.results.values()),
                                              encryption=part_encryption, if_match=complete_if_match)
    except BaseException as exc:
        await _fail(job, ref, bucket, key, upload_id, exc)
        raise
    if job.journal is not None:
        await job.journal.upload_ended(ref, upload_id, etag=done.etag if job.in_place else None)
    return done
