"""What every write must carry over besides the bytes: the source's tags and user metadata.

Tags are read from the source before any write that could drop them (an in-place CopyObject with REPLACE
and a tagging COPY deletes them on Ceph RGW 16; CreateMultipartUpload's tags are dropped there too), and
after every write the result's tags and user metadata are compared with the source's. Tags a server
dropped are written back with PutObjectTagging (and, once learned for a route, written after every such
write without waiting to see them gone); a result whose tags or metadata still differ is a mismatch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from workers import learned
from workers.job import Job
from workers.model import ObjectHead, ObjectRef

log = logging.getLogger("rekey.carry")

CAP_KEEPS_TAGS = "keeps_tags_{route}"   # False once a write of this route came back without its tags
CAP_HEAD_COUNTS_TAGS = "head_counts_tags"   # HeadObject reports x-amz-tagging-count (learned on a scratch object)

Tags = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Carried:
    """What one object's writes must carry: its source HEAD (user metadata, content type), its tags as read
    before any write, and the route of the write (tags are learned per route)."""

    source: ObjectHead
    tags: Tags = field(default_factory=dict)
    route: str = "copy"


def route_of(action: str, *, in_place: bool, multipart: bool) -> str:
    """The route a write takes, as capabilities name it: e.g. "copy-in-place", "stream-multipart"."""
    return f"{action}{'-multipart' if multipart and action == 'stream' else ''}{'-in-place' if in_place else ''}"


def keeps_tags(job: Job, route: str) -> bool:
    return learned.known(job, CAP_KEEPS_TAGS.format(route=route)) is not False


async def put_tags(job: Job, key: str, tags: Tags) -> None:
    await job.dest.put_tags(job.dst.bucket, key, tags)


async def mismatch(job: Job, key: str, written: ObjectHead, carried: Carried) -> str | None:
    """After a write: why the result does not carry the source's user metadata and tags, or None. Tags a
    route is known to drop are written first; tags found dropped are written back (and learned)."""
    why = metadata_mismatch(carried.source, written)
    if why is not None:
        return why
    if carried.tags and not keeps_tags(job, carried.route):
        await put_tags(job, key, carried.tags)
    if not carried.tags and not written.tag_count and counts_tags(job):
        return None   # no tags to carry, and the HEAD of the result counts none
    return await check_tags(job, key, carried.tags, route=carried.route)


def counts_tags(job: Job) -> bool:
    """Does this endpoint's HeadObject count an object's tags (learned, see engine.preflight.probe_tags_beside)?"""
    return learned.known(job, CAP_HEAD_COUNTS_TAGS) is True


def metadata_mismatch(source: ObjectHead, written: ObjectHead) -> str | None:
    """Why the written object's user metadata or content type is not the source's, or None."""
    if dict(written.metadata) != dict(source.metadata):
        return f"user metadata is {sorted(written.metadata)}, source had {sorted(source.metadata)}"
    if (written.content_type or None) != (source.content_type or None) and source.content_type:
        return f"content type is {written.content_type!r}, source had {source.content_type!r}"
    return None


async def check_tags(job: Job, key: str, tags: Tags, *, route: str) -> str | None:
    """Compare the written object's tags with the source's; put back tags the server dropped (and
    remember that this route drops them). Returns why they still differ, or None."""
    got = await job.dest.get_tags(job.dst.bucket, key)
    if got == dict(tags):
        return None
    if tags:
        log.info("%s: the %s write did not keep the object's tags; writing them back", key, route)
        await learned.learn(job, CAP_KEEPS_TAGS.format(route=route), False)
        await put_tags(job, key, tags)
        got = await job.dest.get_tags(job.dst.bucket, key)
        if got == dict(tags):
            return None
    return f"tags are {sorted(got)}, source had {sorted(tags)}"


COPY_FIRST_CHECKS = 2            # tagged objects whose copy-first tags are compared before the route is trusted
_COPY_FIRST_STARTED = "copy-first-tags:started"


async def copy_first_tags(job: Job, key: str, dest_key: str, written: ObjectHead,
                          read_tags: Callable[[Job, ObjectRef], Awaitable[dict[str, str]]]) -> str | None:
    """A copy made before reading its source carried the tags server-side (TaggingDirective COPY). Its
    point is two requests per object, so the tags are compared on the route's first tagged objects only:
    after COPY_FIRST_CHECKS agreements the route is trusted (`keeps_tags_copy-first`), one disagreement
    turns copy-first off (the caller's object then goes the HEAD-first way, which reads tags first).
    Objects started while the first ones are being compared are not compared themselves."""
    name = CAP_KEEPS_TAGS.format(route="copy-first")
    if job.caps is None or learned.known(job, name) is True:
        return None
    if learned.known(job, name) is None and job.calibration.get(_COPY_FIRST_STARTED, 0) >= COPY_FIRST_CHECKS:
        return None
    job.calibration[_COPY_FIRST_STARTED] = job.calibration.get(_COPY_FIRST_STARTED, 0) + 1
    tags = await read_tags(job, ObjectRef(key, written.size, ""))
    if not tags and not written.tag_count:
        job.calibration[_COPY_FIRST_STARTED] -= 1   # no evidence either way: a later object checks
        return None
    got = await job.dest.get_tags(job.dst.bucket, dest_key)
    if got != tags:
        await learned.learn(job, name, False)
        return f"kept tags {sorted(got)}, source had {sorted(tags)}"
    agreed = job.calibration.get(name, 0) + 1
    job.calibration[name] = agreed
    if agreed >= COPY_FIRST_CHECKS:
        await learned.learn(job, name, True)
    return None
