"""Before a run's first write: both buckets reachable, the target encryption really applied by the
endpoint, and what the endpoint can do (If-Match, tags, copies, updates in place) learned on scratch keys."""

from __future__ import annotations

import logging
from dataclasses import replace

import anyio

from engine.config import Config, UpdateInPlace
from workers.capabilities import Topic, flag, named, target_applied
from workers.carry import CAP_HEAD_COUNTS_TAGS, CAP_KEEPS_TAGS
from workers.job import Job
from workers.model import Encryption, Mode
from workers.probes import (
    UnsafeTargetError,
    check_bucket,
    probe_if_match,
    probe_part_copy_into_sse_c,
    probe_tags,
    probe_target,
    website_configured,
)
from workers.serverside import IF_MATCH_COPY
from workers.update_encryption import probe_update_encryption, why_not_applicable

log = logging.getLogger("rekey.preflight")


async def check_buckets(job: Job) -> None:
    """Both buckets exist and are reachable (asked at once; the first error names its bucket)."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(check_bucket, job.source, job.src.bucket, "source")
        if job.dst.bucket != job.src.bucket or job.dest is not job.source:
            tg.start_soon(check_bucket, job.dest, job.dst.bucket, "destination")


async def _probe_target_applied(config: Config, job: Job) -> None:
    """A scratch object written in the target mode must come back in it (once per checkpoint)."""
    target = config.target
    name = f"{target.mode.value}:{target.encryption.kms_key_id or ''}"
    if job.caps.current.targets_applied.get(name) is not True:
        why = await probe_target(job.dest, job.dst.bucket, job.dst.prefix, target.encryption)
        if why is not None:
            raise UnsafeTargetError(
                f"the endpoint accepts {target.mode.value} writes but does not apply them ({why}); "
                "refusing to replace objects with ones it would not protect", bucket=job.dst.bucket, op="probe")
        await job.caps.learn(target_applied(name, True))


async def _probe_if_match(job: Job) -> None:
    """In place every write is guarded by If-Match: learn once, per operation, whether this endpoint
    honours it (PutObject and CompleteMultipartUpload: `if_match`; CopyObject: `if_match_copy`)."""
    answers = await probe_if_match(job.dest, job.dst.bucket, job.dst.prefix, retry=job.retry)
    for op, fact in (("PutObject", flag(Topic.IF_MATCH, True)), ("CopyObject", named(IF_MATCH_COPY, True))):
        honoured, why = answers.get(op, (None, ""))
        if honoured is False:
            log.warning("this endpoint does not honour If-Match on %s (%s): those in-place writes go unguarded, "
                        "so a write by someone else meanwhile can be overwritten", op, why)
        if honoured is not None:
            await job.caps.learn(replace(fact, value=honoured))


async def probe_tags_beside(config: Config, job: Job) -> None:
    """Learn once, on scratch objects, whether HeadObject counts tags (`head_counts_tags`: sources and
    results without tags then need no GetObjectTagging) and, bucket to bucket on one endpoint, whether
    copy-first's CopyObject keeps them (`keeps_tags_copy-first`: instead of reading every source's tags
    until some are found). Runs beside the first objects: it guards no write, and until it answers they
    are checked as before."""
    caps = job.caps.current
    copy_name = CAP_KEEPS_TAGS.format(route="copy-first")
    copy = (job.policy.copy_first and not job.in_place and job.same_endpoint and caps.copy_first is not False
            and caps.get(copy_name) is None)
    if config.target.mode == Mode.CSE or (not copy and caps.get(CAP_HEAD_COUNTS_TAGS) is not None):
        return
    answers = await probe_tags(job.dest, job.dst.bucket, job.dst.prefix, job.target, copy=copy)
    if answers.head_counts_tags is not None:
        await job.caps.learn(named(CAP_HEAD_COUNTS_TAGS, answers.head_counts_tags))
    if answers.copy_keeps_tags is not None:
        await job.caps.learn(named(copy_name, answers.copy_keeps_tags))


async def preflight(config: Config, job: Job) -> None:
    """Before the first write: the target encryption is really applied by this endpoint, and what this
    endpoint can do is known. Runs while the listing starts (see Run.run). The target probe goes first of
    the scratch writes (a refused or unapplied target stops the run before any other); the source's website
    check, a read, goes beside it, and the other checks once it has passed."""
    target = config.target
    caps = job.caps
    async with anyio.create_task_group() as tg:
        if job.policy.copy_first and not job.in_place and caps.current.copy_first is not False:
            tg.start_soon(_check_website, job)
        if target.mode != Mode.CSE:
            await _probe_target_applied(config, job)
        if job.in_place and caps.current.if_match is None:
            tg.start_soon(_probe_if_match, job)
        if target.mode != Mode.CSE:
            tg.start_soon(_probe_write_paths, config, job)


async def _check_website(job: Job) -> None:
    if await website_configured(job.source, job.src.bucket):
        # Website redirects are per-object headers a COPY-directive copy drops on AWS: read every source.
        await job.caps.learn(flag(Topic.COPY_FIRST, False))


async def _probe_write_paths(config: Config, job: Job) -> None:
    """What the server makes of an encryption update in place, and of part copies into SSE-C."""
    target, caps = config.target, job.caps
    if (config.run.update_in_place == UpdateInPlace.AUTO and caps.current.update_encryption is None
            and why_not_applicable(Encryption(Mode.SSE_S3), target.encryption, in_place=job.in_place) is None):
        # Never trusted untested: SeaweedFS and moto store the request as the object's data.
        why = await probe_update_encryption(job.dest, job.dst.bucket, job.dst.prefix, target.encryption)
        await caps.learn(flag(Topic.UPDATE_ENCRYPTION, why is None))
    if target.mode == Mode.SSE_C and caps.current.part_copy_into_sse_c is None:
        ok = await probe_part_copy_into_sse_c(job.dest, job.dst.bucket, job.dst.prefix, target.encryption)
        await caps.learn(flag(Topic.PART_COPY_INTO_SSE_C, ok))
