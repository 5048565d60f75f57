"""Learn one object's state before deciding: its HEAD, its client-side envelope (metadata or instruction
file), the destination's copy bucket to bucket. Reads only, so `rekey plan` learns exactly as a run does."""

from __future__ import annotations

from dataclasses import dataclass

from workers.core.decide import ClientSide, ObjectState
from workers.cse import (
    INSTRUCTION_SUFFIX,
    Envelope,
    detect_format,
    is_instruction_file,
    load_instruction_file,
    needs_instruction_file,
)
from workers.errors import KeyRequiredError, ObjectChangedError, RekeyError, WrongKeyError
from workers.job import Job
from workers.model import Encryption, Mode, ObjectHead, ObjectRef

INSTRUCTION_MAX = 64 * 1024
INSTRUCTION_KEYS = frozenset({"x-amz-3", "x-amz-key-v2", "x-amz-key"})  # an encrypted data key


@dataclass(frozen=True, slots=True)
class Learned:
    """What deciding needs, and what the strategies then need besides: the envelope itself."""

    state: ObjectState
    envelope: Envelope | None = None
    instruction_file_of_another: bool = False   # this object is `<key>.instruction` of another object


async def head_source(job: Job, ref: ObjectRef) -> ObjectHead:
    """HeadObject on the source; an SSE-C object is asked again with the configured source key, and in
    place with an SSE-C target also with the target key (an earlier write put it under that key)."""
    try:
        return await job.retried(f"head {ref.key}", lambda: job.source.head(
            job.src.bucket, ref.key, version_id=ref.version_id))
    except KeyRequiredError:
        pass
    source = Encryption(Mode.SSE_C, sse_c_key=job.source_sse_c_key) if job.source_sse_c_key is not None else None
    target = job.target if job.in_place and job.target.mode == Mode.SSE_C else None
    for enc in (source, target if target is not None and target.key_md5 != (source and source.key_md5) else None):
        if enc is None:
            continue
        try:
            return await _head_with(job, ref, enc)
        except WrongKeyError:
            pass
    if source is None:
        raise KeyRequiredError("object is SSE-C encrypted and no [source] sse_c_key_file is configured",
                               bucket=job.src.bucket, key=ref.key, op="head_object")
    raise WrongKeyError(f"[source] sse_c_key_file (key MD5 {source.key_md5}) does not open this SSE-C object",
                        bucket=job.src.bucket, key=ref.key, op="head_object")


async def _head_with(job: Job, ref: ObjectRef, enc: Encryption) -> ObjectHead:
    return await job.retried(f"head {ref.key}", lambda: job.source.head(
        job.src.bucket, ref.key, read_enc=enc, version_id=ref.version_id))


async def head_dest(job: Job, ref: ObjectRef) -> ObjectHead | None:
    """HeadObject on the destination key (bucket-to-bucket only); None when it does not exist."""
    read = job.target if job.target.mode == Mode.SSE_C else None
    try:
        return await job.retried(f"head destination {ref.key}", lambda: job.dest.head(
            job.dst.bucket, job.dest_key(ref.key), read_enc=read))
    except (ObjectChangedError, KeyRequiredError, WrongKeyError):
        return None


async def looks_like_instruction_file(job: Job, ref: ObjectRef, head: ObjectHead) -> bool:
    """`<key>.instruction` holding a small JSON map of S3EC keys. The marker metadata alone is not
    enough: SeaweedFS drops user metadata whose value is empty, and the marker's value is ""."""
    if is_instruction_file(head.metadata):
        return True
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


def announces_client_side(ref: ObjectRef, head: ObjectHead) -> bool:
    """The metadata or the listing says the object is client-side encrypted (whether its envelope is sound
    or not)."""
    return detect_format(head.metadata) is not None or needs_instruction_file(head.metadata) or ref.paired is True


def may_be_client_side(job: Job, ref: ObjectRef, head: ObjectHead) -> bool:
    """Whether the envelope must be looked for: the metadata says so, the listing paired the object with
    `<key>.instruction` (V1/V2 objects with one carry no S3EC metadata at all), or client-side keys are
    configured and the pairing is not known (an object resumed from the checkpoint)."""
    return announces_client_side(ref, head) or (job.cse is not None and ref.paired is None)


async def learn(job: Job, ref: ObjectRef, head: ObjectHead) -> Learned:
    """Everything `decide` needs about one object whose HEAD is known."""
    from workers.cse_transfer import load_envelope  # loads cryptography: only for client-side objects
    if await looks_like_instruction_file(job, ref, head):
        return Learned(ObjectState(head), instruction_file_of_another=True)
    env = None
    if may_be_client_side(job, ref, head):
        cse_target = job.cse is not None and job.cse.target is not None
        env = await load_envelope(job, ref, head, look_for_file=cse_target or ref.paired is not False)
    client_side = None
    if env is not None:
        client_side = ClientSide(env.format, env.content_alg, env.from_instruction_file,
                                 under_target=await _under_target(job, env))
    dest = None
    if client_side is None and not job.in_place and (not ref.dest_listed or ref.dest_size == head.size):
        # HEAD the destination only when its listing showed an object of this size there (or was not
        # consulted, e.g. for objects resumed from the checkpoint).
        dest = await head_dest(job, ref)
    return Learned(ObjectState(head, client_side=client_side, dest=dest), envelope=env)


async def _under_target(job: Job, env: Envelope) -> bool:
    """Wrapped by the target keyring, in the target format, with the envelope where the target puts it."""
    from workers.cse_transfer import already_under_target  # loads cryptography: only for client-side objects
    cse = job.cse
    if cse is None or cse.target is None or env.from_instruction_file != cse.instruction_file:
        return False
    return await already_under_target(cse, env)
