"""Server-side re-encryption of one object: CopyObject, or UploadPartCopy in parallel parts."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from workers import sse
from workers.job import Job
from workers.model import Encryption, Mode, ObjectHead, ObjectRef, PartResult
from workers.multipart import run_multipart
from workers.parts import PartSpan, adjust_part_size, split
from workers.s3 import carried_params


def copy_source(job: Job, head: ObjectHead, ref: ObjectRef) -> dict[str, Any]:
    source: dict[str, Any] = {"Bucket": job.src.bucket, "Key": ref.key}
    if ref.version_id:
        source["VersionId"] = ref.version_id
    return source


def source_key_params(head: ObjectHead, job: Job) -> dict[str, Any]:
    """CopySourceSSECustomer* parameters when the source is SSE-C."""
    if head.encryption.mode != Mode.SSE_C or job.source_sse_c_key is None:
        return {}
    return sse.customer_key_params(Encryption(Mode.SSE_C, sse_c_key=job.source_sse_c_key), "CopySource")


async def copy_object(job: Job, ref: ObjectRef, head: ObjectHead) -> dict[str, Any]:
    """One CopyObject onto the destination key, guarded by the planned ETag, metadata re-sent (REPLACE).

    REPLACE rather than COPY because some servers refuse an in-place COPY even when the encryption
    changes; everything HeadObject showed is re-sent, and tags are copied server-side.
    """
    dest_key = job.dest_key(ref.key)
    params: dict[str, Any] = {
        "Bucket": job.dst.bucket,
        "Key": dest_key,
        "CopySource": copy_source(job, head, ref),
        "CopySourceIfMatch": head.etag,
        "MetadataDirective": "REPLACE",
        "TaggingDirective": "COPY",
        **carried_params(head),
        **sse.write_params(job.target),
        **source_key_params(head, job),
    }
    sse_c = head.encryption.mode == Mode.SSE_C or job.target.mode == Mode.SSE_C
    return await job.retried(
        f"copy {ref.key}",
        lambda: job.dest.call("copy_object", bucket=job.dst.bucket, key=dest_key, sse_c=sse_c, **params))


async def tagging_param(job: Job, ref: ObjectRef) -> dict[str, Any]:
    """`Tagging` for CreateMultipartUpload / PutObject: the source's tags, fetched once."""
    tags = await job.retried(f"tags {ref.key}",
                             lambda: job.source.get_tags(job.src.bucket, ref.key, ref.version_id))
    return {"Tagging": urlencode(tags)} if tags else {}


async def multipart_copy(job: Job, ref: ObjectRef, head: ObjectHead) -> tuple[dict[str, Any], int]:
    """UploadPartCopy of every part in parallel; returns (complete response, parts reused from a crash)."""
    dest_key = job.dest_key(ref.key)
    part_size = adjust_part_size(head.size, job.part_size)
    create = {**carried_params(head), **sse.write_params(job.target), **await tagging_param(job, ref)}
    src = copy_source(job, head, ref)
    src_key = source_key_params(head, job)
    dest_key_params = sse.customer_key_params(job.target)
    sse_c = bool(src_key or dest_key_params)

    async def upload_part(upload_id: str, span: PartSpan) -> PartResult:
        async def send() -> dict[str, Any]:
            return await job.dest.call(
                "upload_part_copy", bucket=job.dst.bucket, key=dest_key, sse_c=sse_c,
                Bucket=job.dst.bucket, Key=dest_key, UploadId=upload_id, PartNumber=span.number,
                CopySource=src, CopySourceRange=f"bytes={span.start}-{span.end}",
                CopySourceIfMatch=head.etag, **src_key, **dest_key_params)
        resp = await job.retried(f"part {span.number} of {ref.key}", send)
        return PartResult(span.number, str(resp["CopyPartResult"]["ETag"]), span.size)

    return await run_multipart(
        job, ref, bucket=job.dst.bucket, key=dest_key, kind="part-copy", part_size=part_size,
        spans=split(head.size, part_size), create_params=create, upload_part=upload_part,
        complete_params=dest_key_params)
