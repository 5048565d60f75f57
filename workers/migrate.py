"""Re-encrypt one object: learn its state, plan, copy or stream, verify, and say what happened."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from workers import sse
from workers.cse import (
    INSTRUCTION_SUFFIX,
    ContentAlg,
    Envelope,
    Keyring,
    detect_format,
    is_instruction_file,
    load_instruction_file,
    needs_instruction_file,
)
from workers.cse_transfer import already_under_target, delete_instruction, load_envelope, rewrap, transfer, verify_cse
from workers.errors import (
    FatalError,
    KeyRequiredError,
    ObjectChangedError,
    ObjectError,
    RekeyError,
    UnsupportedError,
    VerifyError,
    WrongKeyError,
)
from workers.job import CseSettings, Job
from workers.model import Action, Encryption, Mode, ObjectHead, ObjectRef, Outcome, State
from workers.parts import MAX_SINGLE_COPY
from workers.s3 import CopyRequest, Directive, Source, Written
from workers.serverside import copy_object, multipart_copy
from workers.stream import stream_copy
from workers.update_encryption import update_object_encryption

log = logging.getLogger("rekey.migrate")

# Capability names remembered per run in the checkpoint.
CAP_PART_COPY_FROM = "upload_part_copy_from_{mode}"   # False once the server answered 501
CAP_COPY_APPLIES = "copy_applies_{src}_to_{dst}"       # False once a copy did not apply the encryption
CAP_RESPONSE_TRUTHFUL = "copy_response_truthful_{src}_to_{dst}"  # verify = "auto": answers match HEADs
CAP_COPY_FIRST = "copy_first"  # False once a copy made before reading the source came out not as asked
CALIBRATION = 3  # objects per path verified both ways before copy answers are trusted
INSTRUCTION_MAX = 64 * 1024
INSTRUCTION_KEYS = frozenset({"x-amz-3", "x-amz-key-v2", "x-amz-key"})  # an encrypted data key


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for one object, with the reason in words."""

    action: Action
    reason: str


def plan_object(head: ObjectHead, *, target: Encryption, in_place: bool, same_endpoint: bool,
                multipart_threshold: int, dest: ObjectHead | None = None,
                part_copy_ok: bool = True, copy_applies: bool = True) -> Plan:
    """Decide what to do with one object. Pure: no I/O."""
    if in_place and sse.satisfies(head.encryption, target):
        return Plan(Action.SKIP, "already in the target encryption")
    if dest is not None and dest.size == head.size and sse.satisfies(dest.encryption, target) and (
            dest.etag == head.etag
            or (dest.metadata == head.metadata and dest.content_type == head.content_type
                and _not_older(dest, head))):
        return Plan(Action.SKIP, "destination already holds it in the target encryption")
    if not same_endpoint:
        return Plan(Action.STREAM, "source and destination are different endpoints")
    if not copy_applies:
        return Plan(Action.STREAM, "this server's copy does not apply the new encryption to such sources")
    if head.size <= multipart_threshold and head.size <= MAX_SINGLE_COPY:
        return Plan(Action.COPY, "server-side CopyObject")
    if not part_copy_ok:
        return Plan(Action.STREAM, "the server refuses UploadPartCopy for this source or target")
    return Plan(Action.MULTIPART_COPY, "server-side UploadPartCopy in parallel parts")


def _not_older(dest: ObjectHead, src: ObjectHead) -> bool:
    return dest.last_modified is not None and src.last_modified is not None and \
        dest.last_modified >= src.last_modified


async def head_source(job: Job, ref: ObjectRef) -> ObjectHead:
    """HeadObject on the source; an SSE-C object is asked again with the configured source key."""
    try:
        return await job.retried(f"head {ref.key}", lambda: job.source.head(
            job.src.bucket, ref.key, version_id=ref.version_id))
    except KeyRequiredError:
        if job.source_sse_c_key is None:
            raise KeyRequiredError("object is SSE-C encrypted and no [source] sse_c_key_file is configured",
                                   bucket=job.src.bucket, key=ref.key, op="head_object") from None
    enc = Encryption(Mode.SSE_C, sse_c_key=job.source_sse_c_key)
    try:
        return await job.retried(f"head {ref.key}", lambda: job.source.head(
            job.src.bucket, ref.key, read_enc=enc, version_id=ref.version_id))
    except WrongKeyError:
        raise WrongKeyError(f"[source] sse_c_key_file (key MD5 {enc.key_md5}) does not open this SSE-C object",
                            bucket=job.src.bucket, key=ref.key, op="head_object") from None


async def head_dest(job: Job, ref: ObjectRef) -> ObjectHead | None:
    """HeadObject on the destination key (bucket-to-bucket only); None when it does not exist."""
    read = job.target if job.target.mode == Mode.SSE_C else None
    try:
        return await job.retried(f"head destination {ref.key}", lambda: job.dest.head(
            job.dst.bucket, job.dest_key(ref.key), read_enc=read))
    except (ObjectChangedError, KeyRequiredError, WrongKeyError):
        return None


async def check_written(job: Job, key: str, size: int) -> tuple[ObjectHead, str | None]:
    """HeadObject on the result; returns it with the reason it is not what was asked, or None."""
    read = job.target if job.target.mode == Mode.SSE_C else None
    head = await job.retried(f"verify {key}", lambda: job.dest.head(job.dst.bucket, key, read_enc=read))
    why = sse.mismatch(head.encryption, job.target)
    if why is None and head.size != size:
        why = f"size is {head.size}, source had {size}"
    return head, why


def _verify_error(job: Job, key: str, why: str) -> VerifyError:
    return VerifyError(f"written object is not as asked: {why}", bucket=job.dst.bucket, key=key, op="verify")


async def migrate_object(job: Job, ref: ObjectRef) -> Outcome:
    """Everything that happens to one object. Errors before the source is known propagate; later
    per-object errors come back as a failed or changed outcome that names the source mode."""
    if copy_first_applies(job, ref):
        done = await copy_first(job, ref)
        if done is not None:
            return done
    head = await head_source(job, ref)
    listed_version = ref.version_id   # the checkpoint row's identity (None for a ListObjectsV2 ref)
    ref = replace(ref, size=head.size, etag=head.etag, version_id=ref.version_id or head.version_id)
    base = Outcome(key=ref.key, state=State.SKIPPED, action=Action.SKIP, source_mode=head.encryption.mode,
                   target_mode=job.target.mode, version_id=listed_version)
    try:
        return await _migrate_known(job, ref, head, base)
    except FatalError:
        raise
    except RekeyError as exc:
        if not exc.key:  # format and crypto errors know no object: name it
            exc.bucket, exc.key, exc.op = job.src.bucket, ref.key, exc.op or "transform"
        state, reason = describe_error(exc)
        return replace(base, state=state, error=reason, error_kind=type(exc).__name__)


def copy_first_applies(job: Job, ref: ObjectRef) -> bool:
    """Bucket to bucket, an object the destination listing shows absent can be copied before it is read:
    the copy carries metadata and tags server-side, If-Match pins the listed ETag, and the HEAD of the
    result verifies it. Not for client-side targets, SSE-C sources as far as known, versions or part copies."""
    tried, refused = job.copy_first_tally
    return (job.copy_first and job.verify and not job.in_place and job.same_endpoint
            and (job.cse is None or job.cse.target is None)
            and ref.dest_listed and ref.dest_size is None and ref.version_id is None and ref.is_latest
            and bool(ref.etag) and ref.listed_mode not in (Mode.SSE_C, Mode.CSE)
            and ref.size <= min(job.multipart_threshold, MAX_SINGLE_COPY)
            and not ref.key.endswith(INSTRUCTION_SUFFIX)
            and not (refused >= 16 and refused * 2 >= tried)   # mostly SSE-C or client-side: read them first
            and (job.caps is None or job.caps.get(CAP_COPY_FIRST) is not False))


async def copy_first(job: Job, ref: ObjectRef) -> Outcome | None:
    """CopyObject (COPY directives) then HeadObject of the result: 2 requests instead of 3. None when the
    object needs the ordinary path: the copy was refused (an SSE-C source needs its key; a changed or
    deleted source), or the result is not as asked (then this path is off for the run)."""
    dest_key = job.dest_key(ref.key)
    req = CopyRequest(bucket=job.dst.bucket, key=dest_key, source=Source(job.src.bucket, ref.key, if_match=ref.etag),
                      encryption=job.target, metadata_directive=Directive.COPY, tagging_directive=Directive.COPY,
                      storage_class=ref.storage_class)
    job.copy_first_tally[0] += 1
    try:
        await job.retried(f"copy {ref.key}", lambda: job.dest.copy(req))
    except FatalError:
        raise
    except RekeyError as exc:
        job.copy_first_tally[1] += 1
        log.debug("copy of %s before reading it refused (%s): reading it first", ref.key, exc)
        return None
    written, why = await check_written(job, dest_key, ref.size)
    meta = written.metadata
    if why is None and (detect_format(meta) or needs_instruction_file(meta) or is_instruction_file(meta)):
        # Client-side encrypted: the ordinary path decides (decrypt it, or refuse to copy it as it is).
        # The copy is ours, at a key the listing showed empty: take it back.
        job.copy_first_tally[1] += 1
        await job.retried(f"delete {dest_key}", lambda: job.dest.delete(job.dst.bucket, dest_key))
        return None
    if why is not None:
        log.info("%s: a copy before reading the source came out %s; reading sources first from now on",
                 dest_key, why)
        await _learn(job, CAP_COPY_FIRST, False)
        return None   # the ordinary path copies or streams it again, over this copy
    return Outcome(key=ref.key, state=State.DONE, action=Action.COPY, source_mode=None,
                   target_mode=job.target.mode, bytes_copied=ref.size, new_etag=written.etag)


async def looks_like_instruction_file(job: Job, ref: ObjectRef, head: ObjectHead) -> bool:
    """`<key>.instruction` holding a small JSON map of S3EC keys. The marker metadata alone is not
    enough: SeaweedFS drops user metadata whose value is empty, and the marker's value is ""."""
    if not ref.key.endswith(INSTRUCTION_SUFFIX) or head.size > INSTRUCTION_MAX or \
            head.encryption.mode == Mode.SSE_C:
        return False
    body = (await job.retried(f"get {ref.key}", lambda: job.source.get(job.src.bucket, ref.key,
                                                                       version_id=ref.version_id))).data
    try:
        keys = load_instruction_file(body)
    except RekeyError:
        return False
    return bool(INSTRUCTION_KEYS & set(keys))


async def _migrate_known(job: Job, ref: ObjectRef, head: ObjectHead, base: Outcome) -> Outcome:
    if is_instruction_file(head.metadata) or await looks_like_instruction_file(job, ref, head):
        return replace(base, error=None, action=Action.SKIP, source_mode=Mode.CSE)  # moves with its object
    cse = job.cse
    cse_target = cse is not None and cse.target is not None
    env = None
    if cse is not None or detect_format(head.metadata) or needs_instruction_file(head.metadata):
        env = await load_envelope(job, ref, head, look_for_file=cse_target)
    if env is not None or cse_target:
        return await _migrate_cse(job, ref, head, replace(base, source_mode=Mode.CSE if env else base.source_mode,
                                                          target_mode=Mode.CSE if cse_target else job.target.mode),
                                  env)
    source_mode = head.encryption.mode
    # Bucket to bucket: HEAD the destination only when its listing showed an object of this size there
    # (or was not consulted, e.g. for objects resumed from the checkpoint).
    needs_dest_head = not job.in_place and (not ref.dest_listed or ref.dest_size == head.size)
    dest = await head_dest(job, ref) if needs_dest_head else None
    plan = plan_object(head, target=job.target, in_place=job.in_place, same_endpoint=job.same_endpoint,
                       multipart_threshold=job.multipart_threshold, dest=dest,
                       part_copy_ok=_part_copy_ok(job, head), copy_applies=_copy_applies(job, head))
    base = replace(base, action=plan.action)
    log.debug("plan %s: %s -> %s: %s (%s)", ref.key, source_mode.value, job.target.mode.value, plan.action.value,
              plan.reason)
    if plan.action == Action.SKIP:
        return replace(base, new_etag=head.etag if job.in_place else None)
    action, copied, through = plan.action, 0, 0
    if action in (Action.COPY, Action.MULTIPART_COPY) and await update_object_encryption(job, ref, head):
        written, why = await check_written(job, ref.key, head.size)
        if why is None and written.etag != head.etag:
            why = f"ETag changed from {head.etag} to {written.etag} (UpdateObjectEncryption keeps it)"
        if why is not None:
            raise _verify_error(job, ref.key, why)
        return replace(base, state=State.DONE, action=Action.UPDATE, new_etag=written.etag)
    if action == Action.MULTIPART_COPY:
        try:
            await multipart_copy(job, ref, head)
            copied = head.size
        except UnsupportedError:
            await _learn(job, CAP_PART_COPY_FROM.format(mode=source_mode.value), False)
            action = Action.STREAM
    elif action == Action.COPY:
        response = await copy_object(job, ref, head)
        copied = head.size
        if job.verify_auto and _response_trusted(job, source_mode) and \
                sse.mismatch(response.encryption, job.target) is None:
            etag = response.etag or None
            return replace(base, state=State.DONE, action=action, bytes_copied=copied, new_etag=etag)
    dest_key = job.dest_key(ref.key)
    if action != Action.STREAM and job.verify:
        written, why = await check_written(job, dest_key, head.size)
        if action == Action.COPY and job.verify_auto:
            await _calibrate(job, source_mode, response, written)
        if why is None:
            return replace(base, state=State.DONE, action=action, bytes_copied=copied, new_etag=written.etag)
        if written.size != head.size or written.encryption.mode not in (source_mode, job.target.mode):
            raise _verify_error(job, dest_key, why)
        # The server copied the data but did not apply the new encryption (SeaweedFS keeps the old
        # KMS key on an SSE-KMS to SSE-KMS copy): remember that, and stream this object instead.
        await _learn(job, CAP_COPY_APPLIES.format(src=source_mode.value, dst=job.target.mode.value), False)
        if job.in_place:  # the object is now our copy: same bytes, new ETag
            head = await head_source(job, ref)
            ref = replace(ref, etag=head.etag)
        action, copied = Action.STREAM, 0
    if action == Action.STREAM:
        through = (await stream_copy(job, ref, head)).bytes_through_client
    new_etag = None
    if job.verify:
        written, why = await check_written(job, dest_key, head.size)
        if why is not None:
            raise _verify_error(job, dest_key, why)
        new_etag = written.etag
    return replace(base, state=State.DONE, action=action, bytes_copied=copied, bytes_through_client=through,
                   new_etag=new_etag)


async def _migrate_cse(job: Job, ref: ObjectRef, head: ObjectHead, base: Outcome, env: Envelope | None) -> Outcome:
    """Client-side source or target: encrypt, decrypt, re-encrypt or re-wrap."""
    cse = job.cse or CseSettings()
    dest_key = job.dest_key(ref.key)
    plain_size = head.size - 16 if env is not None and env.content_alg != ContentAlg.AES_CBC else head.size
    if cse.target is None:  # client-side -> server-side
        if not cse.allow_decrypt:
            return replace(base, action=Action.REFUSE, error="client-side encrypted: decrypting it into "
                           f"{job.target.mode.value} needs [target] allow_client_side_decrypt = true")
        assert env is not None
        base = replace(base, action=Action.STREAM)
        key = await _source_keyring(job, cse).unwrap(env)
        result = await transfer(job, ref, head, decrypt_with=key, source_env=env, encrypt=None)
        new_etag = None
        if job.verify:
            written, why = await check_written(job, dest_key, plain_size)
            if why is not None:
                raise _verify_error(job, dest_key, why)
            new_etag = written.etag
        if env.from_instruction_file and job.in_place:
            await delete_instruction(job, ref.key)
        return replace(base, state=State.DONE, action=Action.STREAM, bytes_through_client=result.bytes_through_client,
                       plaintext_sha256=result.plaintext_sha256, new_etag=new_etag)
    if env is None:  # plain or server-side -> client-side
        base = replace(base, action=Action.STREAM)
        result = await transfer(job, ref, head, decrypt_with=None, source_env=None, encrypt=cse)
        action = Action.STREAM
    elif await already_under_target(cse, env):
        if job.in_place:
            return replace(base, action=Action.SKIP, new_etag=head.etag)
        result = await rewrap(job, ref, head, env, replace(cse, source=cse.target))  # copied as it is
        action = Action.REWRAP
    elif env.format == cse.target_format and env.content_alg != ContentAlg.AES_CBC:
        base = replace(base, action=Action.REWRAP)
        result = await rewrap(job, ref, head, env, replace(cse, source=_source_keyring(job, cse)))
        action = Action.REWRAP
    else:  # another format (V2 -> V3, CBC): decrypt and encrypt again
        base = replace(base, action=Action.STREAM)
        key = await _source_keyring(job, cse).unwrap(env)
        result = await transfer(job, ref, head, decrypt_with=key, source_env=env, encrypt=cse)
        action = Action.STREAM
    new_etag = result.new_etag
    if job.verify:
        new_etag = (await verify_cse(job, cse, dest_key, plain_size)).etag
    return replace(base, state=State.DONE, action=action, bytes_through_client=result.bytes_through_client,
                   plaintext_sha256=result.plaintext_sha256, new_etag=new_etag)


def _source_keyring(job: Job, cse: CseSettings) -> Keyring:
    if cse.source is None:
        raise WrongKeyError("client-side encrypted and no [source.cse] keys or [kms] are configured to open it",
                            bucket=job.src.bucket, op="unwrap")
    return cse.source


def _response_trusted(job: Job, source_mode: Mode) -> bool:
    return job.caps is not None and job.caps.get(
        CAP_RESPONSE_TRUTHFUL.format(src=source_mode.value, dst=job.target.mode.value)) is True


async def _calibrate(job: Job, source_mode: Mode, response: Written, written: ObjectHead) -> None:
    """verify = "auto": compare what CopyObject answered with what HeadObject then reports. After
    CALIBRATION agreements on one path the answers are trusted for it; one disagreement, never."""
    if job.caps is None:
        return
    name = CAP_RESPONSE_TRUTHFUL.format(src=source_mode.value, dst=job.target.mode.value)
    if job.caps.get(name) is not None:
        return
    answered = response.encryption
    if answered.mode != written.encryption.mode or answered.key_md5 != written.encryption.key_md5 or \
            not sse.kms_key_matches(answered.kms_key_id, written.encryption.kms_key_id):
        await _learn(job, name, False)
        return
    job.calibration[name] = job.calibration.get(name, 0) + 1
    if job.calibration[name] >= CALIBRATION:
        await _learn(job, name, True)


def _copy_applies(job: Job, head: ObjectHead) -> bool:
    if job.caps is None:
        return True
    name = CAP_COPY_APPLIES.format(src=head.encryption.mode.value, dst=job.target.mode.value)
    return job.caps.get(name) is not False


def _part_copy_ok(job: Job, head: ObjectHead) -> bool:
    if job.caps is None:
        return True
    if job.caps.get(CAP_PART_COPY_FROM.format(mode=head.encryption.mode.value)) is False:
        return False
    # UploadPartCopy into an SSE-C destination needs a probe: some servers complete it unreadably.
    return not (job.target.mode == Mode.SSE_C and job.caps.get("upload_part_copy_into_sse_c") is not True)


async def _learn(job: Job, name: str, value: bool) -> None:
    log.info("learned about this endpoint: %s = %s", name, value)
    if job.caps is not None:
        await job.caps.learn(name, value)


def describe_error(exc: RekeyError) -> tuple[State, str]:
    """The state and the one-line reason an object error is recorded with."""
    if isinstance(exc, ObjectChangedError):
        return State.CHANGED, str(exc)
    if isinstance(exc, ObjectError):
        return State.FAILED, str(exc)
    return State.FAILED, str(exc)
