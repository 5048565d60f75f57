"""Server-side re-encryption of one object: CopyObject, or UploadPartCopy in parallel parts."""

from __future__ import annotations

from collections.abc import Mapping

from workers import carry
from workers.errors import ObjectGoneError, RekeyError, UnsupportedError, WrongKeyError
from workers.job import Job
from workers.model import Encryption, Mode, ObjectHead, ObjectRef, PartResult
from workers.multipart import run_multipart
from workers.parts import PartSpan, adjust_part_size, split
from workers.s3 import Attributes, CopyRequest, CreateUpload, Directive, Source, Written


def source_key(head: ObjectHead, job: Job) -> Encryption | None:
    """The source's SSE-C key (copy-source SSE-C headers) when the source is SSE-C."""
    if head.encryption.mode != Mode.SSE_C or job.source_sse_c_key is None:
        return None
    return Encryption(Mode.SSE_C, sse_c_key=job.source_sse_c_key)


def copy_source(job: Job, head: ObjectHead, ref: ObjectRef) -> Source:
    """The source of a copy of `ref`, guarded by the ETag HeadObject showed, with its SSE-C key."""
    return Source(job.src.bucket, ref.key, version_id=ref.version_id, if_match=head.etag,
                  encryption=source_key(head, job))


async def copy_object(job: Job, ref: ObjectRef, head: ObjectHead) -> Written:
    """One CopyObject onto the destination key, guarded by the planned ETag, metadata re-sent (REPLACE).

    REPLACE rather than COPY because some servers refuse an in-place COPY even when the encryption
    changes; everything HeadObject showed is re-sent, and tags are copied server-side.
    """
    req = CopyRequest(bucket=job.dst.bucket, key=job.dest_key(ref.key), source=copy_source(job, head, ref),
                      encryption=job.target, metadata_directive=Directive.REPLACE,
                      tagging_directive=Directive.COPY, attributes=Attributes.of(head),
                      if_match=write_guard(job, head, copy=True))
    return await job.dest.copy(req)


IF_MATCH_COPY = "if_match_copy"   # False once CopyObject applied a write under a stale If-Match (probe)


def write_guard(job: Job, head: ObjectHead, *, copy: bool = False) -> str | None:
    """In place, the write replaces the object only if it is still the one that was read (If-Match on
    the destination, checked when the write lands): a concurrent overwrite during a long copy gives 412
    (recorded as changed), never a clobber with older data. Left out where the server was found to
    ignore or refuse it (capabilities `if_match` for PutObject and CompleteMultipartUpload,
    `if_match_copy` for CopyObject, probed before the first write)."""
    if not job.in_place or not head.etag:
        return None
    known = job.caps.current.get(IF_MATCH_COPY) if copy else job.caps.current.if_match
    return None if known is False else head.etag


async def source_tags(job: Job, ref: ObjectRef, head: ObjectHead | None = None) -> dict[str, str]:
    """The source's tags, for CreateMultipartUpload / PutObject (a copy carries them server-side); none
    asked for when its HEAD counts none on an endpoint whose HeadObject counts tags (learned on the
    destination: so only when the source is on the same endpoint)."""
    if head is not None and not head.tag_count and job.same_endpoint and carry.counts_tags(job):
        return {}
    return await job.source.get_tags(job.src.bucket, ref.key, ref.version_id)


def dest_key_enc(job: Job) -> Encryption | None:
    """The SSE-C key every UploadPart and the Complete of an SSE-C destination carry."""
    return job.target if job.target.mode == Mode.SSE_C else None


PER_KEY = "per-key"          # UnsupportedError.code: this key only (the server could not find it)
PERCENT_KEY = "percent-key"  # ... a key with `%` the server's UploadPartCopy could not find
SSE_C_FORM = "sse-c"         # ... the server refuses UploadPartCopy with SSE-C keys (the key itself is right)


async def _refused(job: Job, ref: ObjectRef, head: ObjectHead, exc: RekeyError, sse_c: bool) -> RekeyError:
    """An UploadPartCopy refusal that is about the request's form, not the object, as an UnsupportedError
    (the caller then streams the object): an SSE-C key refused although HeadObject took it, or NoSuchKey
    although the source is still there with the same ETag (RGW 16 for keys with `%`)."""
    if isinstance(exc, WrongKeyError) and sse_c:
        return UnsupportedError(f"the server refuses UploadPartCopy with SSE-C keys ({exc.message})",
                                bucket=exc.bucket, key=exc.key, op=exc.op, code=SSE_C_FORM)
    if isinstance(exc, ObjectGoneError):
        try:
            again = await job.source.head(job.src.bucket, ref.key, read_enc=source_key(head, job),
                                          version_id=ref.version_id)
        except RekeyError:
            return exc
        if again.etag == head.etag:
            return UnsupportedError(f"UploadPartCopy cannot find a source that exists ({exc.message})",
                                    bucket=exc.bucket, key=exc.key, op=exc.op,
                                    code=PERCENT_KEY if "%" in ref.key else PER_KEY)
    return exc


async def multipart_copy(job: Job, ref: ObjectRef, head: ObjectHead, *,
                         tags: Mapping[str, str] | None = None) -> tuple[Written, int]:
    """UploadPartCopy of every part in parallel; returns (complete answer, parts reused from a crash).
    `tags`: the source's tags as read before any write (read here when not given). A refusal of the
    request's form (see `_refused`) comes out as an UnsupportedError."""
    dest_key = job.dest_key(ref.key)
    part_size = adjust_part_size(head.size, job.part_size)
    create = CreateUpload(job.dst.bucket, dest_key, encryption=job.target, attributes=Attributes.of(head),
                          tags=await source_tags(job, ref, head) if tags is None else tags)
    src = copy_source(job, head, ref)
    dest_enc = dest_key_enc(job)
    sse_c = src.sse_c or dest_enc is not None

    async def upload_part(upload_id: str, span: PartSpan) -> PartResult:
        try:
            return await job.dest.upload_part_copy(
                job.dst.bucket, dest_key, upload_id, span.number, src, span.start, span.end, encryption=dest_enc)
        except (WrongKeyError, ObjectGoneError) as exc:
            raise await _refused(job, ref, head, exc, sse_c) from None

    return await run_multipart(
        job, ref, kind="part-copy", part_size=part_size, spans=split(head.size, part_size), create=create,
        upload_part=upload_part, complete_encryption=dest_enc, complete_if_match=write_guard(job, head))
