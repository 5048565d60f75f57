"""Re-encrypt one key of a versioned bucket: its current version, and its noncurrent ones as `[run] noncurrent` says.

S3 cannot rewrite a version or insert one below others: a re-encrypted version can only be a new version on
top. So for `reencrypt` and `delete` the key's history is re-created on top, oldest first, from the first
version not in the target encryption up to the current one (later versions already in the target are
re-created too, so the order of the history is kept and the newest ends current); the old versions stay,
or with `delete` are deleted once every copy is verified. While this runs, a GET of the key can return an
older version for the time of a few copies, and a crash leaves it so until the next run finishes the key.

Idempotency (a run killed at any point never re-creates a version twice): every re-created version carries
the user metadata `x-amz-meta-rekey-source-version-id` = the version it re-creates. A run reads every
version's metadata (HeadObject) and takes the top run of versions that carry the marker and are in the
target encryption as copies already made. If their sources, in order, are the first versions still to be
re-created, it continues after them; if not (someone wrote in between), it re-creates them all again, on
top (never losing or reordering anything, at the price of duplicates). Each copy is guarded twice:
`CopySourceIfMatch` with the source version's ETag, and `IfMatch` with the ETag of the version it expects
on top, so a write by someone else in between makes the key `changed` instead of burying that write.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from workers import sse
from workers.capabilities import copy_applies
from workers.core.learn import head_source
from workers.core.migrate import migrate_object
from workers.cse import detect_format, needs_instruction_file
from workers.errors import (
    FatalError,
    ObjectChangedError,
    RekeyError,
    UnsupportedError,
    VerifyError,
)
from workers.job import Job
from workers.model import Action, Mode, ObjectHead, ObjectRef, Outcome, State
from workers.parts import MAX_SINGLE_COPY
from workers.s3 import Attributes, CopyRequest, Directive, PutRequest, Source, Written
from workers.serverside import source_key, source_tags
from workers.stream import content_md5, source_read_enc

MARKER = "rekey-source-version-id"
KEEP, REPORT, REENCRYPT, DELETE = "keep", "report", "reencrypt", "delete"
REPORT_REASON = 'noncurrent version left as is (noncurrent = "report")'
CONFIRM_REASON = ('noncurrent = "delete" deletes old versions and needs `rekey run --confirm-delete-noncurrent`; '
                  "nothing was changed")
DELETED_KEY_REASON = "the key is deleted (its latest version is a delete marker): its versions are left as is"

Versioned = tuple[ObjectRef, ObjectHead]


async def migrate_versions(job: Job, versions: list[ObjectRef], noncurrent: str, *,
                           confirmed: bool = False) -> list[Outcome]:
    """Every version of one key (oldest first, as `engine.versions.version_groups` gives them).

    `keep`: the current version as `migrate_object` does it; noncurrent ones get no outcome.
    `report`: the same, and one `skipped` outcome per noncurrent version naming its mode.
    `reencrypt` / `delete`: the history re-created on top (module docstring); `delete` needs `confirmed`.
    Returns one outcome per version it looked at; fatal errors propagate.
    """
    current = next((v for v in reversed(versions) if v.is_latest), None)
    old = [v for v in versions if v is not current]
    if noncurrent in (KEEP, REPORT):
        outcomes = [await migrate_object(job, current)] if current is not None else []
        if noncurrent == REPORT:
            outcomes += [await _report(job, v) for v in old]
        return outcomes
    if noncurrent not in (REENCRYPT, DELETE):
        raise ValueError(f"noncurrent must be keep, report, reencrypt or delete, not {noncurrent!r}")
    if noncurrent == DELETE and not confirmed:
        return [_outcome(job, v, None, state=State.FAILED, action=Action.REFUSE, error=CONFIRM_REASON)
                for v in versions]
    if current is None:
        return [_outcome(job, v, None, action=Action.SKIP, error=DELETED_KEY_REASON) for v in versions]
    try:
        return await _recreate_history(job, versions, delete=noncurrent == DELETE)
    except FatalError:
        raise
    except RekeyError as exc:
        state, reason = describe_error(exc)
        return [_outcome(job, v, None, state=state, action=Action.RECREATE, error=reason,
                         error_kind=type(exc).__name__) for v in versions]


def describe_error(exc: RekeyError) -> tuple[State, str]:
    """The state and the one-line reason an object error is recorded with."""
    return (State.CHANGED if isinstance(exc, ObjectChangedError) else State.FAILED), str(exc)


def _outcome(job: Job, ref: ObjectRef, head: ObjectHead | None, *, state: State = State.SKIPPED,
             action: Action = Action.SKIP, **fields: Any) -> Outcome:
    return Outcome(key=ref.key, state=state, action=action, source_mode=head.encryption.mode if head else None,
                   target_mode=job.target.mode, version_id=ref.version_id, **fields)


async def _report(job: Job, ref: ObjectRef) -> Outcome:
    try:
        head = await head_source(job, ref)
    except FatalError:
        raise
    except RekeyError as exc:
        state, reason = describe_error(exc)
        return _outcome(job, ref, None, state=state, error=reason, error_kind=type(exc).__name__)
    right = sse.satisfies(head.encryption, job.target)
    return _outcome(job, ref, head, error=None if right else REPORT_REASON,
                    new_etag=head.etag if right else None)


def marker(head: ObjectHead) -> str | None:
    return head.metadata.get(MARKER) or None


def plan_history(stack: list[Versioned], job: Job) -> tuple[list[Versioned], dict[str, Versioned]]:
    """(versions to re-create, oldest first; copies already on top by source version id). Pure.

    The copies on top are the longest run of newest versions carrying the marker and in the target
    encryption. Below them, everything from the first version not in the target is to be re-created.
    """
    top = len(stack)
    while top and marker(stack[top - 1][1]) and sse.satisfies(stack[top - 1][1].encryption, job.target):
        top -= 1
    below, copies = stack[:top], stack[top:]
    first = next((i for i, (_, h) in enumerate(below) if not sse.satisfies(h.encryption, job.target)), None)
    todo = below[first:] if first is not None else []
    present = {r.version_id for r, _ in below}
    made = [(marker(h), (r, h)) for r, h in copies if marker(h) in present]
    sources = [m for m, _ in made]
    if sources != [r.version_id for r, _ in todo[:len(sources)]]:
        return todo, {}   # not a run of ours to continue: re-create everything again
    return todo, {str(m): pair for m, pair in made}


async def _recreate_history(job: Job, versions: list[ObjectRef], *, delete: bool) -> list[Outcome]:
    if job.cse is not None and job.cse.target is not None:
        raise UnsupportedError("noncurrent versions cannot be re-created into client-side encryption",
                               bucket=job.src.bucket, key=versions[-1].key, op="recreate_versions")
    stack: list[Versioned] = []
    for ref in versions:
        head = await head_source(job, ref)
        if detect_format(head.metadata) or needs_instruction_file(head.metadata):
            raise UnsupportedError("client-side encrypted versions cannot be re-created on top",
                                   bucket=job.src.bucket, key=ref.key, op="recreate_versions")
        stack.append((replace(ref, etag=head.etag, size=head.size), head))
    todo, made = plan_history(stack, job)
    expect_top = stack[-1][1].etag
    done: dict[str, tuple[str, str, int]] = {}   # source version id -> (new version id, new ETag, bytes copied)
    for ref, head in todo:
        if ref.version_id in made:
            copy = made[str(ref.version_id)][1]
            done[str(ref.version_id)] = (str(copy.version_id), copy.etag, 0)
            continue
        new_vid, new_etag, copied = await recreate_version(job, ref, head, expect_top=expect_top)
        done[str(ref.version_id)] = (new_vid, new_etag, copied)
        expect_top = new_etag
    if delete:  # only now: every copy exists and was verified (made ones: marker, target, size checked)
        for ref, head in todo:
            new_vid = done[str(ref.version_id)][0]
            copy_head = made[str(ref.version_id)][1] if ref.version_id in made else None
            if copy_head is not None and copy_head.size != head.size:
                raise VerifyError(f"re-created version {new_vid} has {copy_head.size} bytes, not {head.size}",
                                  bucket=job.src.bucket, key=ref.key, op="verify")
            await _delete_version(job, ref)
    outcomes: list[Outcome] = []
    action = Action.RECREATE_DELETE if delete else Action.RECREATE
    for ref, head in stack:
        vid = str(ref.version_id)
        if vid in done:
            new_vid, new_etag, copied = done[vid]
            outcomes.append(_outcome(job, ref, head, state=State.DONE, action=action, new_etag=new_etag,
                                     new_version_id=new_vid, bytes_copied=copied))
        else:  # already in the target: below the first version to re-create, or one of our copies
            outcomes.append(_outcome(job, ref, head, new_etag=head.etag))
    return outcomes


async def _delete_version(job: Job, ref: ObjectRef) -> None:
    await job.source.delete(job.src.bucket, ref.key, version_id=ref.version_id)


async def recreate_version(job: Job, ref: ObjectRef, head: ObjectHead, *, expect_top: str) -> tuple[str, str, int]:
    """Write version `ref` again, re-encrypted, as the new current version; returns (version id, ETag, bytes
    copied server-side). CopyObject, or GET + PutObject when this server's copy does not apply the target
    to such sources (SeaweedFS: SSE-KMS key A to key B)."""
    if head.size > MAX_SINGLE_COPY:
        raise UnsupportedError(f"versions above {MAX_SINGLE_COPY} bytes cannot be re-created yet",
                               bucket=job.src.bucket, key=ref.key, op="recreate_version")
    marked = replace(head, metadata={**head.metadata, MARKER: str(ref.version_id)})
    path = (head.encryption.mode, job.target.mode)
    if job.caps.current.copy_applies.get(path) is not False:
        new_vid = await _copy_version(job, ref, marked, expect_top)
        written, why = await _check_version(job, ref, head, new_vid)
        if why is None:
            return new_vid, written.etag, head.size
        if written.size != head.size or written.encryption.mode not in (head.encryption.mode, job.target.mode):
            raise VerifyError(f"re-created version {new_vid} is not as asked: {why}", bucket=job.dst.bucket,
                              key=ref.key, op="verify")
        await job.caps.learn(copy_applies(path, False))
        await job.dest.delete(   # ours, seconds old, wrong
            job.dst.bucket, ref.key, version_id=new_vid)
    if head.size > job.single_put_max:
        raise UnsupportedError("this server's copy does not apply the target to this version and it is too large "
                               "to re-create through rekey in one request", bucket=job.src.bucket, key=ref.key,
                               op="recreate_version")
    new_vid = await _put_version(job, ref, marked, expect_top)
    written, why = await _check_version(job, ref, head, new_vid)
    if why is not None:
        raise VerifyError(f"re-created version {new_vid} is not as asked: {why}", bucket=job.dst.bucket,
                          key=ref.key, op="verify")
    return new_vid, written.etag, 0


async def _copy_version(job: Job, ref: ObjectRef, marked: ObjectHead, expect_top: str) -> str:
    source = Source(job.src.bucket, ref.key, version_id=ref.version_id, if_match=marked.etag,
                    encryption=source_key(marked, job))
    req = CopyRequest(bucket=job.dst.bucket, key=ref.key, source=source, encryption=job.target,
                      metadata_directive=Directive.REPLACE, tagging_directive=Directive.COPY,
                      attributes=Attributes.of(marked), if_match=expect_top)
    written = await job.dest.copy(req)
    return await _new_version_id(job, ref, written)


async def _put_version(job: Job, ref: ObjectRef, marked: ObjectHead, expect_top: str) -> str:
    read = source_read_enc(job, marked)
    body = (await job.source.get(
        job.src.bucket, ref.key, read_enc=read, version_id=ref.version_id)).data
    if len(body) != marked.size:
        raise ObjectChangedError(f"version has {len(body)} bytes, HEAD said {marked.size}",
                                 bucket=job.src.bucket, key=ref.key, op="get_object")
    md5 = await content_md5(body)
    req = PutRequest(job.dst.bucket, ref.key, body, content_md5=md5, encryption=job.target,
                     attributes=Attributes.of(marked), tags=await source_tags(job, ref), if_match=expect_top)
    written = await job.dest.put(req)
    return await _new_version_id(job, ref, written)


async def _new_version_id(job: Job, ref: ObjectRef, written: Written) -> str:
    """The version a write created: from its answer, or the current version if it carries our marker."""
    if written.version_id:
        return written.version_id
    read = job.target if job.target.mode == Mode.SSE_C else None
    top = await job.dest.head(job.dst.bucket, ref.key, read_enc=read)
    if marker(top) != ref.version_id or not top.version_id:
        raise ObjectChangedError("the key changed while its versions were re-created", bucket=job.dst.bucket,
                                 key=ref.key, op="recreate_version")
    return top.version_id


async def _check_version(job: Job, ref: ObjectRef, head: ObjectHead, new_vid: str) -> tuple[ObjectHead, str | None]:
    """HeadObject of the new version: target encryption, same size, our marker."""
    read = job.target if job.target.mode == Mode.SSE_C else None
    written = await job.dest.head(
        job.dst.bucket, ref.key, read_enc=read, version_id=new_vid)
    why = sse.mismatch(written.encryption, job.target)
    if why is None and written.size != head.size:
        why = f"size is {written.size}, the version had {head.size}"
    if why is None and marker(written) != ref.version_id:
        why = f"it does not carry {MARKER} = {ref.version_id}"
    return written, why
