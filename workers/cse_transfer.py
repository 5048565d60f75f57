"""Client-side encryption of one object: encrypt, decrypt, re-encrypt (one GCM stream) or re-wrap the data key.

A GCM stream cannot restart mid-object, and the data key is never written to the checkpoint, so an
interrupted client-side upload is aborted and the object starts again on the next run (its finished
parts are not reused). The multipart upload is completed only after the source's tag verified.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

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
from workers.errors import (
    CorruptObjectError,
    FatalError,
    ObjectChangedError,
    ObjectError,
    RekeyError,
    VerifyError,
    leaves,
    most_telling,
)
from workers.job import CseSettings, Job
from workers.memory import SLACK, MemoryBudget
from workers.model import Encryption, ObjectHead, ObjectRef, SecretKey
from workers.multipart import part_body, run_ordered_upload
from workers.parts import adjust_part_size
from workers.s3 import Attributes, CopyRequest, CreateUpload, Directive, PutRequest, Source
from workers.serverside import dest_key_enc, source_tags, write_guard
from workers.stream import content_md5, read_range, replace_guard, source_read_enc

TAG_LEN = 16
PREFETCH = 2       # ranged GETs fetched or waiting per object: the next one is read while one is transformed
_OFFLOAD = 256 * 1024
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CseResult:
    bytes_through_client: int
    plaintext_sha256: str | None
    new_etag: str | None = None
    plaintext_size: int | None = None   # plaintext bytes that went through the transform (CBC padding hides it)
    checked: Envelope | None = None     # the envelope written, its data key seen unwrapped by the target keyring


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


class Later(Generic[T]):
    """A value a task beside the caller fetches (`run`), awaited where it is needed (`get`)."""

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._value: T | None = None
        self._error: Exception | None = None

    async def run(self, fetch: Callable[[], Awaitable[T]]) -> None:
        try:
            self._value = await fetch()
        except Exception as exc:   # raised where the value is awaited, in the caller's own flow
            self._error = exc
        self._event.set()

    async def get(self) -> T:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


class RangeReader:
    """The source read in order in ranges of `span` bytes, PREFETCH GETs ahead of its consumer. A range
    holds `weight` times its size of the read budget from before its GET until `done`; whatever is held
    when the reader is closed (the object failed) goes back."""

    def __init__(self, job: Job, ref: ObjectRef, head: ObjectHead, span: int, *, weight: int = 1) -> None:
        self._job, self._ref, self._head = job, ref, head
        self.span = span
        self.spans = [(s, min(s + span, head.size) - 1) for s in range(0, head.size, span)]
        self._weight = weight
        self._ready: dict[int, bytes] = {}
        self._failed: dict[int, Exception] = {}
        self._events = [anyio.Event() for _ in self.spans]
        self._ahead = anyio.Semaphore(PREFETCH)
        self._held = 0

    def _cost(self, i: int) -> int:
        start, end = self.spans[i]
        return self._weight * (end - start + 1)

    async def run(self) -> None:
        """Issue the GETs in order, each once the budget and PREFETCH allow (beside the consumer)."""
        async with anyio.create_task_group() as tg:
            for i in range(len(self.spans)):
                await self._ahead.acquire()
                await budget_acquire(self._job.memory, self._cost(i))
                self._held += self._cost(i)
                tg.start_soon(self._fetch, i)

    async def _fetch(self, i: int) -> None:
        start, end = self.spans[i]
        try:
            self._ready[i] = await read_range(self._job, self._ref, self._head, start, end)
        except Exception as exc:   # raised by `take`, in the consumer's own flow (its cleanup runs)
            self._failed[i] = exc
        self._events[i].set()

    async def take(self, i: int) -> bytes:
        await self._events[i].wait()
        if i in self._failed:
            raise self._failed.pop(i)
        return self._ready.pop(i)

    async def done(self, i: int) -> None:
        self._held -= self._cost(i)
        await budget_release(self._job.memory, self._cost(i))
        self._ahead.release()

    async def close(self) -> None:
        held, self._held = self._held, 0
        self._ready.clear()
        await budget_release(self._job.memory, held)


async def _produce(reader: RangeReader, transform: Transform, part_size: int, sink: PartSink) -> int:
    """Transform the source's ranges in order straight into part buffers the sink lends, and send them;
    returns the number of parts.

    Memory: a read holds its range's size of the read budget until transformed; a part buffer is lent
    within the write budget until uploaded. The pools are separate, so a producer waiting for write room
    never holds what an upload needs to finish.
    """
    parts = PartCutter(part_size, sink)
    transform.reserve(part_size)
    for i in range(len(reader.spans)):
        chunk = await reader.take(i)
        try:
            await parts.feed(chunk, transform.update_into)
        finally:
            del chunk
            await reader.done(i)
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
    """Stream one object through rekey: decrypt a client-side source and/or encrypt for a client-side target.

    The source's first GET goes out at once, while the data key is wrapped and checked, the source's tags
    read and the upload created: none of those needs the data, and the data needs none of them to be read."""
    plain_size = _plain_size(head, source_env)
    if encrypt is not None and encrypt.target is not None and plain_size > GCM_MAX_PLAINTEXT:
        raise ObjectError(f"{plain_size} bytes is over the {GCM_MAX_PLAINTEXT}-byte limit of one GCM stream",
                          bucket=job.src.bucket, key=ref.key, op="encrypt")   # before any I/O
    if _one_put(job, head):
        reader = RangeReader(job, ref, head, max(head.size, 1), weight=2)   # the body and its transform
    else:
        reader = RangeReader(job, ref, head, _part_size(job, head, source_env))
    tags = Later[dict[str, str]]()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader.run)
            tg.start_soon(tags.run, lambda: source_tags(job, ref, head))
            result = await _transfer(job, ref, head, reader, tags, decrypt_with=decrypt_with,
                                     source_env=source_env, encrypt=encrypt)
    except BaseExceptionGroup as group:
        raise _ended_by(group) from None
    finally:
        with anyio.CancelScope(shield=True):
            await reader.close()
    return result


def _ended_by(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that ended a transfer's task group: the most telling rekey error, else its only one."""
    telling = most_telling(group)
    if telling is not None:
        return telling
    real = [e for e in leaves(group) if not isinstance(e, anyio.get_cancelled_exc_class())]
    return real[0] if len(real) == 1 else group


def _one_put(job: Job, head: ObjectHead) -> bool:
    """One GET and one PutObject; larger objects stream in parts (GETs and uploads overlap, and memory is a
    few parts per object)."""
    return head.size <= job.policy.cse_single_put_max


def _plain_size(head: ObjectHead, source_env: Envelope | None) -> int:
    gcm_source = source_env is not None and source_env.content_alg != ContentAlg.AES_CBC
    return head.size - TAG_LEN if gcm_source else head.size


def _part_size(job: Job, head: ObjectHead, source_env: Envelope | None) -> int:
    return adjust_part_size(max(head.size, _plain_size(head, source_env) + TAG_LEN), job.part_size)


async def _transfer(job: Job, ref: ObjectRef, head: ObjectHead, reader: RangeReader, tags: Later[dict[str, str]], *,
                    decrypt_with: SecretKey | None, source_env: Envelope | None,
                    encrypt: CseSettings | None) -> CseResult:
    dest_key = job.dest_key(ref.key)
    decryptor = ContentDecryptor.for_envelope(decrypt_with, source_env) if decrypt_with and source_env else None
    meta = user_metadata(head)
    encryptor = None
    instruction: dict[str, str] | None = None
    digest_with = decrypt_with if decryptor is not None else None  # the data key the digest is keyed by
    env_written: Envelope | None = None
    checked = False
    if encrypt is not None and encrypt.target is not None:
        data_key = digest_with = new_data_key()
        wrapped = await encrypt.target.wrap(data_key, encrypt.target_format)
        encryptor = ContentEncryptor(data_key, encrypt.target_format)
        env = env_written = encryptor.envelope(wrapped)
        checked = await check_unwraps(encrypt.target, env, data_key, job, dest_key)
        obj_meta, instruction = envelope_to_metadata(env, instruction_file=encrypt.instruction_file)
        meta.update(obj_meta)
        server_side: Encryption | None = None
    else:
        server_side = job.target
    transform = Transform(decryptor, encryptor, digest_with)
    create = CreateUpload(job.dst.bucket, dest_key, encryption=server_side,
                          attributes=Attributes.of(head, metadata=meta), tags=await tags.get())
    overwrites_source_file = job.in_place and source_env is not None and source_env.from_instruction_file
    if instruction is not None and not overwrites_source_file:
        # First: a crash after the data write must never leave data whose key is nowhere.
        await put_instruction(job, dest_key, instruction)
    elif instruction is not None:
        # The source's own instruction file can only be replaced once its data is replaced: until then
        # the new envelope is kept in the checkpoint (workers.core.pending).
        await record_envelope(job, ref, dest_key, head.etag, instruction)
    try:
        result = await _write(job, ref, head, reader, transform, create)
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
    return replace(result, checked=env_written) if checked else result


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
        moved = await job.retried(f"envelope into metadata {dest_key}", lambda: job.dest.copy(req))
    except FatalError:
        raise
    except RekeyError as exc:
        raise ObjectError(f"instruction file refused ({refused.message}) and the envelope could not be put in the "
                          f"object's metadata either ({exc.message}): the new envelope is kept in the checkpoint "
                          "and the next run writes it", bucket=job.dst.bucket, key=dest_key, op="put_object") from None
    await job.journal_written(ref, moved.etag)
    await forget_envelope(job, ref)
    raise ObjectError(f"instruction file refused ({refused.message}): the envelope was put in the object's "
                      "metadata instead, so it stays readable; the next run moves it to its instruction file",
                      bucket=job.dst.bucket, key=dest_key + INSTRUCTION_SUFFIX, op="put_object")


async def _forget_instruction(job: Job, dest_key: str) -> None:
    try:
        await delete_instruction(job, dest_key)
    except RekeyError:
        pass


async def _write(job: Job, ref: ObjectRef, head: ObjectHead, reader: RangeReader, transform: Transform,
                 create: CreateUpload) -> CseResult:
    key_enc = dest_key_enc(job)  # SSE-C target: every UploadPart carries the key
    if _one_put(job, head):
        body = await reader.take(0) if head.size else b""
        try:
            out = bytearray(len(body) + SLACK)   # made here, not in a worker thread's heap arena
            transform.reserve(len(body))
            data = await _run(lambda: _whole(transform, body, out), len(body))
            md5 = await content_md5(data)
            req = PutRequest(create.bucket, create.key, data, content_md5=md5, encryption=create.encryption,
                             attributes=create.attributes, tags=create.tags, if_match=replace_guard(job, head))
            written = await job.dest.put(req)
            await job.journal_written(ref, written.etag)   # a multipart write's: with the end of its upload
        finally:
            if head.size:
                await reader.done(0)
        return CseResult(head.size + len(data), transform.sha256, written.etag, transform.plain_bytes)
    part_size = reader.span
    done = await run_ordered_upload(
        job, ref, kind="cse", part_size=part_size, create=create,
        produce=lambda sink: _produce(reader, transform, part_size, sink),
        part_encryption=key_enc, complete_if_match=replace_guard(job, head))
    return CseResult(2 * head.size, transform.sha256, done.etag, transform.plain_bytes)


def _whole(transform: Transform, body: bytes, out: bytearray) -> bytes:
    """A whole object's transform into `out` (len(body) + SLACK bytes): one buffer, no joins."""
    view = memoryview(out)
    n = transform.update_into(body, view)
    tail = transform.finish()
    view[n:n + len(tail)] = tail
    return part_body(out, n + len(tail))


async def check_unwraps(keyring: Keyring, env: Envelope, data_key: SecretKey, job: Job, key: str) -> bool:
    """Never write an object whose data key the configured keyring cannot unwrap (when it can try: True)."""
    if not keyring.can_unwrap(env):
        return False  # an RSA keyring with only the public key cannot check itself
    got = await keyring.unwrap(env)
    if got.raw != data_key.raw:
        raise VerifyError("the target keyring does not unwrap the data key it wrapped", bucket=job.dst.bucket,
                          key=key, op="wrap")
    return True


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
        await job.journal_written(ref, new_etag)
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


async def verify_cse(job: Job, settings: CseSettings, dest_key: str, plain_size: int, *,
                     checked: Envelope | None = None) -> ObjectHead:
    """The written object parses as client-side, its size fits, and the target keyring opens its data key.
    `checked`: the envelope this run wrote, whose data key the keyring was seen to unwrap just before the
    write (`check_unwraps`); an object carrying exactly that envelope needs no second KMS call."""
    head = await job.dest.head(job.dst.bucket, dest_key)
    env = await dest_envelope(job, dest_key, head, look_for_file=settings.instruction_file)
    if env is None:
        raise VerifyError("written object carries no client-side envelope", bucket=job.dst.bucket, key=dest_key,
                          op="verify")
    if head.size != plain_size + TAG_LEN:
        raise VerifyError(f"size is {head.size}, expected {plain_size + TAG_LEN}", bucket=job.dst.bucket,
                          key=dest_key, op="verify")
    if checked is not None and replace(env, from_instruction_file=False) == replace(checked,
                                                                                     from_instruction_file=False):
        return head
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
