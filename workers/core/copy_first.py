"""Bucket to bucket, an object the destination lacks is copied before it is read: 2 requests instead of 3.

The copy carries metadata and tags server-side (COPY directives), CopySourceIfMatch pins the listed ETag,
and the HEAD of the result verifies it. Not for client-side targets, objects the listing paired with an
instruction file (or whose pairing is not known), SSE-C sources as far as known, versions or part copies.
"""

from __future__ import annotations

import logging

from workers import carry
from workers.capabilities import Topic, flag
from workers.core.decide import Strategy
from workers.core.outcome import Written
from workers.core.verify import check_written
from workers.cse import INSTRUCTION_SUFFIX, detect_format, is_instruction_file, needs_instruction_file
from workers.errors import FatalError, RekeyError
from workers.job import Job
from workers.model import Mode, ObjectRef
from workers.parts import MAX_SINGLE_COPY
from workers.s3 import CopyRequest, Directive, Source
from workers.serverside import source_tags

log = logging.getLogger("rekey.copy_first")
MOSTLY_REFUSED = 16   # after this many refusals, if they are half the tries: read sources first


def applies(job: Job, ref: ObjectRef) -> bool:
    tally = job.hooks.tally
    policy = job.policy
    return (policy.copy_first and policy.verify and not job.in_place and job.same_endpoint
            and (policy.cse is None or policy.cse.target is None)
            and ref.dest_listed and ref.dest_size is None and ref.version_id is None and ref.is_latest
            and ref.paired is False
            and bool(ref.etag) and ref.listed_mode not in (Mode.SSE_C, Mode.CSE)
            and ref.size <= min(policy.multipart_threshold, MAX_SINGLE_COPY)
            and not ref.key.endswith(INSTRUCTION_SUFFIX)
            and not (tally.copy_first_refused >= MOSTLY_REFUSED
                     and tally.copy_first_refused * 2 >= tally.copy_first_tried)
            and job.caps.current.copy_first is not False)


async def copy_first(job: Job, ref: ObjectRef) -> Written | None:
    """CopyObject (COPY directives) then HeadObject of the result. None when the object needs the ordinary
    path: the copy was refused (an SSE-C source needs its key; a changed or deleted source), or the result
    is not as asked (then this path is off for the run)."""
    dest_key = job.dest_key(ref.key)
    req = CopyRequest(bucket=job.dst.bucket, key=dest_key, source=Source(job.src.bucket, ref.key, if_match=ref.etag),
                      encryption=job.target, metadata_directive=Directive.COPY, tagging_directive=Directive.COPY,
                      storage_class=ref.storage_class)
    tally = job.hooks.tally
    tally.copy_first_tried += 1
    try:
        await job.retried(f"copy {ref.key}", lambda: job.dest.copy(req))
    except FatalError:
        raise
    except RekeyError as exc:
        tally.copy_first_refused += 1
        log.debug("copy of %s before reading it refused (%s): reading it first", ref.key, exc)
        return None
    written, why = await check_written(job, dest_key, ref.size)
    meta = written.metadata
    if why is None and (detect_format(meta) or needs_instruction_file(meta) or is_instruction_file(meta)):
        # Client-side encrypted: the ordinary path decides (decrypt it, or refuse to copy it as it is).
        # The copy is ours, at a key the listing showed empty: take it back.
        tally.copy_first_refused += 1
        await job.retried(f"delete {dest_key}", lambda: job.dest.delete(job.dst.bucket, dest_key))
        return None
    if why is not None:
        log.info("%s: a copy before reading the source came out %s; reading sources first from now on",
                 dest_key, why)
        await job.caps.learn(flag(Topic.COPY_FIRST, False))
        return None   # the ordinary path copies or streams it again, over this copy
    why = await carry.copy_first_tags(job, ref.key, dest_key, written, source_tags)
    if why is not None:
        log.info("%s: a copy before reading the source %s; reading sources first from now on", dest_key, why)
        await job.caps.learn(flag(Topic.COPY_FIRST, False))
        return None
    return Written(Strategy.COPY, bytes_copied=ref.size, new_etag=written.etag)
