"""Client-side encryption of one object: encrypt, decrypt, re-encrypt (one GCM stream) or re-wrap the data key.

A GCM stream cannot restart mid-object, and the data key is never written to the checkpoint, so an
interrupted client-side upload is aborted and the object starts again on the next run (its finished
parts are not reused). The multipart upload is completed only after the source's tag verified.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio

from workers import sse
from workers.cse import (
    GCM_MAX_PLAINTEXT,
    INSTRUCTION_FILE_MAX,
    INSTRUCTION_SUFFIX,
    S3EC_KEYS,
    ContentAlg,
    ContentDecryptor,
    ContentEncryptor,
    Envelope,
    Keyring,
    KmsKeyring,
    MultiKeyring,
    detect_format,
    dump_instruction_file,
    envelope_to_metadata,
    instruction_object_metadata,
    load_instruction_file,
    needs_instruction_file,
    new_data_key,
    parse_envelope,
    rewrap_envelope,
)
from workers.cse.transform import DIGEST_PREFIX, PartCutter, PartSink, PlaintextDigest, Transform, digest_key
from workers.errors import CorruptObjectError, FatalError, ObjectChangedError, ObjectError, RekeyError, VerifyError
from workers.job import CseSettings, Job
from workers.memory import SLACK, MemoryBudget
from workers.model import Encryption, ObjectHead, ObjectRef, SecretKey
from workers.multipart import part_body, run_ordered_upload
from workers.parts import adjust_part_size
from workers.s3 import Attributes, CopyRequest, CreateUpload, Directive, PutRequest, Source
from workers.serverside import dest_key_enc, source_tags, write_guard
from workers.stream import content_md5, read_range, replace_guard, reserved, source_read_enc

TAG_LEN = 16
PREFETCH = 1       # ranged GETs ahead of the cipher, per object
_OFFLOAD = 256 * 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CseResult:
    bytes_through_client: int
    plaintext_sha256: str | None
    new_etag: str | None = None
    plaintext_size: int | None = None   # plaintext bytes that went through the transform (CBC padding hides it)


def user_metadata(head: ObjectHead) -> dict[str, str]:
    """The object's own metadata, without the S3EC envelope keys."""
    return {k: v for k, v in head.metadata.items() if k not in S3EC_KEYS}


async def load_envelope(job: Job, ref: ObjectRef, head: ObjectHead, *, look_for_file: bool) -> Envelope | None:
    """The client-side envelope of a source object, from its metadata or its instruction file; None if plain."""
    fmt = detect_format(head.metadata)
    instruction: dict[str, str] | None = None
    if needs_instruction_file(head.metadata) or (fmt is None and look_for_file):
        try:
            body = await read_instruction_file(job, ref.key + INSTRUCTION_SUFFIX)
        except ObjectChangedError:  # 404: no instruction file
            if fmt is None and not needs_instruction_file(head.metadata):
                return None
            raise ObjectError("client-side object's instruction file is missing", bucket=job.src.bucket,
                              key=ref.key + INSTRUCTION_SUFFIX, op="get_object") from None
        instruction = load_instruction_file(body)
    if fmt is None and instruction is None:
        return None
    return parse_envelope(head.metadata, instruction)


async def read_instruction_file(job: Job, key: str) -> bytes:
    """The body of `key` (an instruction file) when it is at most INSTRUCTION_FILE_MAX bytes; HEAD first,
    then a GET pinned to that ETag, so a file swapped in between is not read either."""
    head = await job.source.head(job.src.bucket, key)
    if head.size > INSTRUCTION_FILE_MAX:
        raise CorruptObjectError(f"instruction file is {head.size} bytes, over the {INSTRUCTION_FILE_MAX}-byte "
                                 "limit of an envelope: not read", bucket=job.src.bucket, key=key, op="get_object")
    return (await job.source.get(job.src.bucket, key, if_match=head.etag)).data


async def already_under_target(settings: CseSettings, env: Envelope) -> bool:
    """Is a client-side source already wrapped by the target keyring in the target format?"""
    target = settings.target
    if target is None or env.format != settings.target_format or not target.can_unwrap(env):
        return False
    try:
        await target.unwrap(env)
    except RekeyError:
        return False
    if isinstance(target, KmsKeyring):
        return sse.kms_key_matches(target.key_id, target.last_key_id)
    return True


async def _run(fn: Callable[[], T], size: int) -> T:
    """`fn()`, in a worker thread when it works on more than _OFFLOAD bytes (cryptography and hashlib
    release the GIL on large buffers, so it overlaps the event loop's network I/O)."""
    return await anyio.to_thread.run_sync(fn) if size > _OFFLOAD else fn()


async def _produce(job: Job, ref: ObjectRef, head: ObjectHead, transform: Transform, part_size: int,
                   sink: PartSink) -> int:
    """Read the source in order (PREFETCH ranged GETs ahead), transform each range straight into part
    buffers the sink lends, send them; returns the number of parts.

    Memory: a read holds its range's size of the read budget until transformed; a part buffer is lent
    within the write budget until uploaded. The pools are separate, so a producer waiting for write room
    never holds what an upload needs to finish.
    """
    spans = [(s, min(s + part_size, head.size) - 1) for s in range(0, head.size, part_size)]
    ready: dict[int, bytes] = {}
    events = [anyio.Event() for _ in spans]
    ahead = anyio.Semaphore(PREFETCH)
    parts = PartCutter(part_size, sink)
    transform.reserve(part_size)
    async with anyio.create_task_group() as tg:

        async def fetch(i: int) -> None:
            start, end = spans[i]
            ready[i] = await read_range(job, ref, head, start, end)
            events[i].set()

        async def feeder() -> None:
            for i in range(len(spans)):
                await ahead.acquire()
                await budget_acquire(job.memory, spans[i][1] - spans[i][0] + 1)
                tg.start_soon(fetch, i)

        tg.start_soon(feeder)
        for i in range(len(spans)):
            await events[i].wait()
            chunk = ready.pop(i)
            try:
                await parts.feed(chunk, transform.update_into)
            finally:
                del chunk
                await budget_release(job.memory, spans[i][1] - spans[i][0] + 1)
                ahead.release()
    await parts.write(transform.finish())
    return await parts.close()


async def budget_acquire(budget: MemoryBudget | None, nbytes: int) -> None:
    if budget is not None:
        await budget.acquire(nbytes)


async def budget_release(budget: MemoryBudget | None, nbytes: int) -> None:
    if budget is not None:
        await budget.release(nbytes)


async def transfer(job: Job, ref: ObjectRef, head: ObjectHead, *, decrypt_with: SecretKey | None,
                   source_env: Envelope | None, encrypt: CseSettings | None) -> CseResult:
    """Stream one object through rekey: decrypt a client-side source and/or encrypt for a client-side target."""
    dest_key = job.dest_key(ref.key)
    decryptor = ContentDecryptor.for_envelope(decrypt_with, source_env) if decrypt_with and source_env else None
    plain_size = head.size - TAG_LEN if source_env is not None and source_env.content_alg != ContentAlg.AES_CBC \
        else head.size
    meta = user_metadata(head)
    encryptor = None
    instruction: dict[str, str] | None = None
    digest_with = decrypt_with if decryptor is not None else None  # the data key the digest is keyed by
    env_written: Envelope | None = None
    if encrypt is not None and encrypt.target is not None:
        if plain_size > GCM_MAX_PLAINTEXT:
            raise ObjectError(f"{plain_size} bytes is over the {GCM_MAX_PLAINTEXT}-byte limit of one GCM stream",
                              bucket=job.src.bucket, key=ref.key, op="encrypt")
        data_key = digest_with = new_data_key()
        wrapped = await encrypt.target.wrap(data_key, encrypt.target_format)
        encryptor = ContentEncryptor(data_key, encrypt.target_format)
        env = env_written = encryptor.envelope(wrapped)
        await check_unwraps(encrypt.target, env, data_key, job, dest_key)
        obj_meta, instruction = envelope_to_metadata(env, instruction_file=encrypt.instruction_file)
        meta.update(obj_meta)
        server_side: Encryption | None = None
    else:
        server_side = job.target
    transform = Transform(decryptor, encryptor, digest_with)
    create = CreateUpload(job.dst.bucket, dest_key, encryption=server_side,
                          attributes=Attributes.of(head, metadata=meta), tags=await source_tags(job, ref))
    overwrites_source_file = job.in_place and source_env is not None and source_env.from_instruction_file
    if instruction is not None and not overwrites_source_file:
        # First: a crash after the data write must never leave data whose key is nowhere.
        await put_instruction(job, dest_key, instruction)
    elif instruction is not None:
        # The source's own instruction file can only be replaced once its data is replaced: until then
        # the new envelope is kept in the checkpoint (workers.core.pending).
        await record_envelope(job, ref, dest_key, head.etag, instruction)
    try:
        result = await _write(job, ref, head, transform, create, dest_key, plain_size)
    except Exception:
        with anyio.CancelScope(shield=True):
            if instruction is not None and not job.in_place:
                await _forget_instruction(job, dest_key)   # written by this attempt, for data not written
            elif instruction is not None:
                await forget_envelope(job, ref)
        raise
    if instruction is not None and overwrites_source_file:
        assert env_written is not None
        await put_after_data(job, ref, head, dest_key, result.new_etag or "", env_written, instruction)
    return result


async def record_envelope(job: Job, ref: ObjectRef, dest_key: str, old_etag: str,
                          instruction: Mapping[str, str]) -> None:
    if job.hooks.objects is not None:
        await job.hooks.objects.envelope_pending(ref, dest_key=dest_key, old_etag=old_etag,
                                                 instruction=instruction)


async def forget_envelope(job: Job, ref: ObjectRef) -> None:
    if job.hooks.objects is not None:
        await job.hooks.objects.envelope_written(ref)


async def put_after_data(job: Job, ref: ObjectRef, head: ObjectHead, dest_key: str, new_etag: str,
                         env: Envelope, instruction: Mapping[str, str]) -> None:
    """The instruction file of data just written; on refusal, the envelope in the object's metadata."""
    try:
        await put_instruction(job, dest_key, dict(instruction))
    except FatalError:
        raise
    except RekeyError as exc:
        await _envelope_into_metadata(job, ref, head, dest_key, new_etag, env, exc)
    await forget_envelope(job, ref)


async def _envelope_into_metadata(job: Job, ref: ObjectRef, head: ObjectHead, dest_key: str, new_etag: str,
                                  env: Envelope, refused: RekeyError) -> None:
    """The instruction file was refused after its data: the full envelope goes into the object's own
    metadata (a metadata-only copy guarded by the new ETag), so any S3EC client reads the object."""
    meta, _ = envelope_to_metadata(env, instruction_file=False)
    req = CopyRequest(bucket=job.dst.bucket, key=dest_key,
                      source=Source(job.dst.bucket, dest_key, if_match=new_etag or None),
                      metadata_directive=Directive.REPLACE, tagging_directive=Directive.COPY,
                      attributes=Attributes.of(head, metadata={**user_metadata(head), **meta}),
                      if_match=new_etag or None)
    try:
        await job.retried(f"envelope into metadata {dest_key}", lambda: job.dest.copy(req))
    except FatalError:
        raise
    except RekeyError as exc:
        raise ObjectError(f"instruction file refused ({refused.message}) and the envelope could not be put in the "
                          f"object's metadata either ({exc.message}): the new envelope is kept in the checkpoint "
                          "and the next run writes it", bucket=job.dst.bucket, key=dest_key, op="put_object") from None
    await forget_envelope(job, ref)
    raise ObjectError(f"instruction file refused ({refused.message}): the envelope was put in the object's "
                      "metadata instead, so it stays readable; the next run moves it to its instruction file",
                      bucket=job.dst.bucket, key=dest_key + INSTRUCTION_SUFFIX, op="put_object")


async def _forget_instruction(job: Job, dest_key: str) -> None:
    try:
        await delete_instruction(job, dest_key)
    except RekeyError:
        pass


async def _write(job: Job, ref: ObjectRef, head: ObjectHead, transform: Transform, create: CreateUpload,
                 dest_key: str, plain_size: int) -> CseResult:
    key_enc = dest_key_enc(job)  # SSE-C target: every UploadPart carries the key
    # Larger objects stream in parts: GETs and uploads overlap, and memory is a few parts per object.
    if head.size <= min(job.single_put_max, job.part_size):
        async with reserved(job, head.size * 2):
            body = await read_range(job, ref, head, 0, head.size - 1) if head.size else b""
            out = bytearray(len(body) + SLACK)   # made here, not in a worker thread's heap arena
            transform.reserve(len(body))
            data = await _run(lambda: _whole(transform, body, out), len(body))
            md5 = await content_md5(data)
            req = PutRequest(create.bucket, create.key, data, content_md5=md5, encryption=create.encryption,
                             attributes=create.attributes, tags=create.tags, if_match=replace_guard(job, head))
            written = await job.dest.put(req)
        return CseResult(head.size + len(data), transform.sha256, written.etag, transform.plain_bytes)
    part_size = adjust_part_size(max(head.size, plain_size + TAG_LEN), job.part_size)
    done = await run_ordered_upload(
        job, ref, kind="cse", part_size=part_size, create=create,
        produce=lambda sink: _produce(job, ref, head, transform, part_size, sink),
        part_encryption=key_enc, complete_if_match=replace_guard(job, head))
    return CseResult(2 * head.size, transform.sha256, done.etag, transform.plain_bytes)


def _whole(transform: Transform, body: bytes, out: bytearray) -> bytes:
    """A whole object's transform into `out` (len(body) + SLACK bytes): one buffer, no joins."""
    view = memoryview(out)
    n = transform.update_into(body, view)
    tail = transform.finish()
    view[n:n + len(tail)] = tail
    return part_body(out, n + len(tail))


async def check_unwraps(keyring: Keyring, env: Envelope, data_key: SecretKey, job: Job, key: str) -> None:
    """Never write an object whose data key the configured keyring cannot unwrap (when it can try)."""
    if not keyring.can_unwrap(env):
        return  # an RSA keyring with only the public key cannot check itself
    got = await keyring.unwrap(env)
    if got.raw != data_key.raw:
        raise VerifyError("the target keyring does not unwrap the data key it wrapped", bucket=job.dst.bucket,
                          key=key, op="wrap")


async def put_instruction(job: Job, dest_key: str, instruction: dict[str, str]) -> None:
    body = dump_instruction_file(instruction)
    key = dest_key + INSTRUCTION_SUFFIX
    req = PutRequest(job.dst.bucket, key, body,
                     attributes=Attributes(metadata=instruction_object_metadata(), content_type="application/json"))
    await job.dest.put(req)


async def rewrap(job: Job, ref: ObjectRef, head: ObjectHead, env: Envelope, settings: CseSettings) -> CseResult:
    """New wrapping of the same data key; the ciphertext is not read. In place, a metadata-only copy."""
    assert settings.target is not None and settings.source is not None
    new_env = await rewrap_envelope(env, settings.source, settings.target, settings.target_format)
    obj_meta, instruction = envelope_to_metadata(new_env, instruction_file=settings.instruction_file)
    dest_key = job.dest_key(ref.key)
    if instruction is not None:
        await put_instruction(job, dest_key, instruction)
    meta = {**user_metadata(head), **obj_meta}
    new_etag = head.etag
    if not job.in_place or meta != head.metadata:
        req = CopyRequest(bucket=job.dst.bucket, key=dest_key,
                          source=Source(job.src.bucket, ref.key, version_id=ref.version_id, if_match=head.etag),
                          metadata_directive=Directive.REPLACE, tagging_directive=Directive.COPY,
                          attributes=Attributes.of(head, metadata=meta), if_match=write_guard(job, head, copy=True))
        new_etag = (await job.dest.copy(req)).etag
    if instruction is None and env.from_instruction_file and job.in_place:
        await delete_instruction(job, ref.key)
    return CseResult(0, None, new_etag)


async def delete_instruction(job: Job, key: str) -> None:
    """Remove a source's instruction file once the object no longer needs it (after verification)."""
    name = key + INSTRUCTION_SUFFIX
    await job.dest.delete(job.dst.bucket, name)


async def dest_envelope(job: Job, dest_key: str, head: ObjectHead, *, look_for_file: bool) -> Envelope | None:
    """The client-side envelope of a written object (its metadata, or its instruction file)."""
    view = Job.of(source=job.dest, dest=job.dest, src=job.dst, dst=job.dst, in_place=True, same_endpoint=True,
                  target=job.target)
    return await load_envelope(view, ObjectRef(dest_key, head.size, head.etag), head, look_for_file=look_for_file)


async def decrypted_sha256(job: Job, dest_key: str, head: ObjectHead, env: Envelope, keyring: Keyring) -> str:
    """Read a client-side object back in part-size ranges, decrypt it (the tag is checked at the end:
    CorruptObjectError otherwise) and return the keyed digest of its plaintext (see `digest_key`)."""
    data_key = await keyring.unwrap(env)
    transform = Transform(ContentDecryptor.for_envelope(data_key, env), None, digest_with=data_key)
    scratch = memoryview(bytearray(job.part_size + SLACK))   # plaintext is only hashed: one buffer for all
    done = 0
    while done < head.size:
        end = min(head.size, done + job.part_size) - 1
        chunk = await read_dest_range(job, dest_key, done, end)
        await _run(lambda c=chunk: transform.update_into(c, scratch), len(chunk))  # type: ignore[misc]
        done += len(chunk)
    transform.finish()
    digest = transform.sha256
    assert digest is not None
    return digest


async def read_dest_range(job: Job, dest_key: str, start: int, end: int) -> bytes:
    return await job.dest.get_range(job.dst.bucket, dest_key, start, end)


async def verify_cse(job: Job, settings: CseSettings, dest_key: str, plain_size: int) -> ObjectHead:
    """The written object parses as client-side, its size fits, and the target keyring opens its data key."""
    head = await job.dest.head(job.dst.bucket, dest_key)
    env = await dest_envelope(job, dest_key, head, look_for_file=settings.instruction_file)
    if env is None:
        raise VerifyError("written object carries no client-side envelope", bucket=job.dst.bucket, key=dest_key,
                          op="verify")
    if head.size != plain_size + TAG_LEN:
        raise VerifyError(f"size is {head.size}, expected {plain_size + TAG_LEN}", bucket=job.dst.bucket,
                          key=dest_key, op="verify")
    if settings.target is not None and settings.target.can_unwrap(env):
        key = await settings.target.unwrap(env)
        ContentDecryptor.for_envelope(key, env)  # checks the V3 key commitment
    return head


def source_keyring(keyrings: list[Keyring]) -> Keyring | None:
    return MultiKeyring(keyrings) if keyrings else None


__all__ = [
    "DIGEST_PREFIX",
    "CseResult",
    "CseSettings",
    "PlaintextDigest",
    "already_under_target",
    "digest_key",
    "load_envelope",
    "rewrap",
    "source_read_enc",
    "transfer",
    "verify_cse",
]
