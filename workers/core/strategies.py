"""The ways to bring one object into the target; each does its writes and its verification, or says `Cannot`.

A strategy gets an `Attempt` (the job, the object, what was learned) and returns `Written`. `Cannot` is the
one signal that it could not do this object without harm (the server does not implement the request, or
did not apply the encryption); it may carry a fact about the endpoint for the engine to remember, and the
object's new HEAD when the failed attempt replaced it (in place). Any other error fails the object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from workers import carry, readback, sse
from workers.capabilities import Fact, copy_applies, named, part_copy_from
from workers.core.decide import Strategy
from workers.core.learn import Learned, head_source
from workers.core.outcome import Written
from workers.core.verify import (
    calibrate,
    check_written,
    response_trusted,
    verified,
    verify_error,
)
from workers.cse import ContentAlg, Envelope
from workers.errors import ObjectGoneError, UnsupportedError, VerifyError, WrongKeyError
from workers.job import CseSettings, Job
from workers.model import Mode, ObjectHead, ObjectRef
from workers.s3 import Written as Written_
from workers.serverside import PER_KEY, PERCENT_KEY, copy_object, multipart_copy
from workers.stream import stream_copy
from workers.update_encryption import update_object_encryption

if TYPE_CHECKING:
    from workers.cse import Keyring
    from workers.cse_transfer import CseResult

CAP_PART_COPY_PERCENT = "upload_part_copy_finds_percent_keys"  # False once one with `%` answered NoSuchKey


class Cannot(Exception):
    """This strategy cannot do this object; the next one may."""

    def __init__(self, reason: str, *, fact: Fact | None = None, head: ObjectHead | None = None,
                 held: readback.Calibration | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fact = fact
        self.head = head   # the object as it is now, when the attempt replaced it (in place)
        self.held = held   # the source's bytes and SHA-256, when the attempt damaged it (in place)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One object on its way through the strategies."""

    job: Job
    ref: ObjectRef
    head: ObjectHead
    learned: Learned
    reason: str = ""     # the decision's reason (refuse: shown to the user)
    tags: carry.Tags | None = None                 # the source's tags, read before any server-side write
    held: readback.Calibration | None = None       # left by a failed attempt (see Cannot.held)

    @property
    def dest_key(self) -> str:
        return self.job.dest_key(self.ref.key)

    @property
    def path(self) -> tuple[Mode, Mode]:
        return self.head.encryption.mode, self.job.target.mode


Run = Callable[[Attempt], Awaitable[Written]]


# --- nothing to write -------------------------------------------------------------------------------------


async def skip(a: Attempt) -> Written:
    return Written(Strategy.SKIP, new_etag=a.head.etag if a.job.in_place else None)


async def refuse(a: Attempt) -> Written:
    return Written(Strategy.REFUSE, reason=a.reason)


# --- server-side ------------------------------------------------------------------------------------------


async def update(a: Attempt) -> Written:
    if not await update_object_encryption(a.job, a.ref, a.head):
        raise Cannot("UpdateObjectEncryption does not apply or was refused")
    written, why = await check_written(a.job, a.ref.key, a.head.size)
    if why is None and written.etag != a.head.etag:
        why = f"ETag changed from {a.head.etag} to {written.etag} (UpdateObjectEncryption keeps it)"
    if why is not None:
        raise verify_error(a.job, a.ref.key, why)
    return Written(Strategy.UPDATE, new_etag=written.etag)


async def copy(a: Attempt) -> Written:
    return await _server_side(a, Strategy.COPY)


async def multipart(a: Attempt) -> Written:
    return await _server_side(a, Strategy.MULTIPART_COPY)


async def _server_side(a: Attempt, strategy: Strategy) -> Written:
    """CopyObject or UploadPartCopy, verified: encryption and size, then tags and metadata, then (while the
    path calibrates) the bytes read back. A form the server refuses or a result not as asked: `Cannot`."""
    job, head = a.job, a.head
    path = readback.path_of(job, head, strategy.action.value)
    trusted = readback.state(job, path)
    if trusted is False or (trusted is None and job.verify and not readback.can_hold(job, head)):
        raise Cannot(f"the {path} path is turned off, or calibrating and the object too large to hold")
    cal = await readback.before_write(job, a.ref, head, path, hold=job.in_place) \
        if trusted is None and job.verify else None
    response = await _send_copy(a, strategy)
    if strategy == Strategy.COPY:   # a multipart copy's ETag is journaled with the end of its upload
        await job.journal_written(a.ref, response.etag)
    if strategy == Strategy.COPY and job.verify_auto and response_trusted(job, head.encryption.mode) and \
            cal is None and sse.mismatch(response.encryption, job.target) is None and not a.tags:
        return Written(strategy, bytes_copied=head.size, new_etag=response.etag or None)
    if not job.verify:
        return Written(strategy, bytes_copied=head.size)
    written, why = await check_written(job, a.dest_key, head.size)
    if written.etag != response.etag:   # the server reports another ETag than it answered: that one is kept
        await job.journal_written(a.ref, written.etag)
    if strategy == Strategy.COPY and job.verify_auto:
        await calibrate(job, head.encryption.mode, response, written)
    if why is not None:
        _not_applied(a, written, why)
    why = await carry.mismatch(job, a.dest_key, written, _carried(a, strategy))
    if why is None and cal is not None and await readback.after_write(job, a.dest_key, head.size, cal):
        raise Cannot("the result did not read back as the source", head=await _now(a), held=cal)
    if why is not None:
        raise Cannot(f"the {strategy.value} did not carry the object over ({why})", head=await _now(a))
    return Written(strategy, bytes_copied=head.size, new_etag=written.etag)


async def _send_copy(a: Attempt, strategy: Strategy) -> Written_:
    try:
        if strategy == Strategy.COPY:
            return await copy_object(a.job, a.ref, a.head)
        return (await multipart_copy(a.job, a.ref, a.head, tags=a.tags))[0]
    except UnsupportedError as exc:
        raise Cannot(f"{strategy.value} refused ({exc.message})", fact=_refusal(a, strategy, exc)) from None
    except ObjectGoneError:
        if strategy != Strategy.COPY or not a.ref.key.endswith("/"):
            raise
        # HeadObject found it: SeaweedFS keeps a key ending in / as a directory, which it does not copy.
        raise Cannot("the server does not copy a key ending in /") from None


def _refusal(a: Attempt, strategy: Strategy, exc: UnsupportedError) -> Fact | None:
    """What a refused CopyObject / UploadPartCopy says about the server (nothing, for one key's 404)."""
    mode = a.head.encryption.mode
    if exc.code == PER_KEY:
        return None
    if exc.code == PERCENT_KEY:
        return named(CAP_PART_COPY_PERCENT, False)
    if strategy == Strategy.MULTIPART_COPY:
        return part_copy_from(mode, False)
    return named(f"copy_object_from_{mode.value}", False)


def _carried(a: Attempt, strategy: Strategy) -> carry.Carried:
    multipart = a.head.size > a.job.single_put_max if strategy == Strategy.STREAM \
        else strategy == Strategy.MULTIPART_COPY
    return carry.Carried(a.head, a.tags or {}, carry.route_of(strategy.action.value, in_place=a.job.in_place,
                                                              multipart=multipart))


async def _now(a: Attempt) -> ObjectHead | None:
    """In place, the object after a failed attempt replaced it (our copy: same bytes, new ETag)."""
    return await head_source(a.job, a.ref) if a.job.in_place else None


def _not_applied(a: Attempt, written: ObjectHead, why: str) -> None:
    """A copy came out not as asked. The server copied the data but kept the old encryption (SeaweedFS
    keeps the old KMS key on an SSE-KMS to SSE-KMS copy; RGW 16 stores a copy in plaintext): remember that,
    and let a stream redo it. Anything else is a failed verification."""
    if written.size != a.head.size or written.encryption.mode not in (a.head.encryption.mode, a.job.target.mode):
        raise verify_error(a.job, a.dest_key, why)
    now = replace(a.head, etag=written.etag) if a.job.in_place else None   # the object is now our copy
    raise Cannot(f"the copy did not apply the encryption ({why})", fact=copy_applies(a.path, False), head=now)


DIRECTORY_MARKER = ("written; the server keeps a key ending in / as a directory marker, empty and without "
                    "encryption or metadata: there is nothing in it to protect")


async def stream(a: Attempt) -> Written:
    job = a.job
    cal = await _stream_calibration(a)
    held = a.held.held if a.held is not None else None
    result = await stream_copy(job, a.ref, a.head, tags=a.tags, held=held)
    through = result.bytes_through_client
    if a.head.size <= job.single_put_max:   # a multipart stream's ETag is journaled with the end of its upload
        await job.journal_written(a.ref, result.written.etag)
    if not job.verify:
        return Written(Strategy.STREAM, bytes_through_client=through)
    written, why = await check_written(job, a.dest_key, a.head.size)
    if written.etag != result.written.etag:   # the server reports another ETag than it answered
        await job.journal_written(a.ref, written.etag)
    if why is not None and _directory_marker(a, written):
        return Written(Strategy.STREAM, bytes_through_client=through, new_etag=written.etag,
                       reason=DIRECTORY_MARKER, settled=True)
    if why is None:
        why = await carry.mismatch(job, a.dest_key, written, _carried(a, Strategy.STREAM))
    if why is None and cal is not None:
        why = await readback.after_write(job, a.dest_key, a.head.size, cal)
    if why is not None:
        raise verify_error(job, a.dest_key, why)
    return Written(Strategy.STREAM, bytes_through_client=through, new_etag=written.etag)


async def _stream_calibration(a: Attempt) -> readback.Calibration | None:
    """The stream path's read-back calibration for this object, if it is still undecided; a stream path
    that failed it is refused (there is no other route to fall back to)."""
    job = a.job
    path = readback.path_of(job, a.head, Strategy.STREAM.action.value)
    trusted = readback.state(job, path)
    if trusted is False:
        raise verify_error(job, a.dest_key, f"the {path} path failed read-back calibration in this run: "
                           "refusing to write on it")
    if trusted is True or not job.verify:
        return None
    if a.held is not None:
        return readback.Calibration(path, a.held.sha256)
    return await readback.before_write(job, a.ref, a.head, path, hold=False)


def _directory_marker(a: Attempt, written: ObjectHead) -> bool:
    return a.dest_key.endswith("/") and written.size == 0 == a.head.size and written.encryption.mode == Mode.NONE


# --- client-side ------------------------------------------------------------------------------------------


def _settings(a: Attempt) -> CseSettings:
    return a.job.cse or CseSettings()


def _envelope(a: Attempt) -> Envelope:
    env = a.learned.envelope
    if env is None:
        raise VerifyError("client-side strategy without an envelope", bucket=a.job.src.bucket, key=a.ref.key,
                          op="transform")
    return env


def _source_keyring(a: Attempt) -> Keyring:
    cse = _settings(a)
    if cse.source is None:
        raise WrongKeyError("client-side encrypted and no [source.cse] keys or [kms] are configured to open it",
                            bucket=a.job.src.bucket, key=a.ref.key, op="unwrap")
    return cse.source


async def _cse_written(a: Attempt, strategy: Strategy, result: CseResult, plain_size: int) -> Written:
    from workers.cse_transfer import verify_cse  # loads cryptography: only for client-side objects
    etag = result.new_etag
    if a.job.verify:
        etag = (await verify_cse(a.job, _settings(a), a.dest_key, plain_size, checked=result.checked)).etag
    return Written(strategy, bytes_through_client=result.bytes_through_client,
                   plaintext_sha256=result.plaintext_sha256, new_etag=etag)


def _plain_size(a: Attempt, result: CseResult | None = None) -> int:
    """The plaintext size to verify a write against: counted by the transform when the data went through it
    (a CBC source's padding hides it), else derived from the source's ciphertext size."""
    if result is not None and result.plaintext_size is not None:
        return result.plaintext_size
    env = a.learned.envelope
    return a.head.size - 16 if env is not None and env.content_alg != ContentAlg.AES_CBC else a.head.size


async def cse_encrypt(a: Attempt) -> Written:
    from workers.cse_transfer import transfer  # loads cryptography: only for client-side objects
    result = await transfer(a.job, a.ref, a.head, decrypt_with=None, source_env=None, encrypt=_settings(a))
    return await _cse_written(a, Strategy.CSE_ENCRYPT, result, a.head.size)


async def cse_reencrypt(a: Attempt) -> Written:
    from workers.cse_transfer import transfer  # loads cryptography: only for client-side objects
    env = _envelope(a)
    key = await _source_keyring(a).unwrap(env)
    result = await transfer(a.job, a.ref, a.head, decrypt_with=key, source_env=env, encrypt=_settings(a))
    return await _cse_written(a, Strategy.CSE_REENCRYPT, result, _plain_size(a, result))


async def cse_decrypt(a: Attempt) -> Written:
    from workers.cse_transfer import delete_instruction, transfer  # loads cryptography: only for client-side objects
    env = _envelope(a)
    key = await _source_keyring(a).unwrap(env)
    result = await transfer(a.job, a.ref, a.head, decrypt_with=key, source_env=env, encrypt=None)
    etag = (await verified(a.job, a.dest_key, _plain_size(a, result))).etag if a.job.verify else None
    if env.from_instruction_file and a.job.in_place:
        # The object's own instruction file, superseded now that the object is verified server-side:
        # left behind, it would make S3EC readers take the plaintext for client-side data.
        await delete_instruction(a.job, a.ref.key)
    return Written(Strategy.CSE_DECRYPT, bytes_through_client=result.bytes_through_client,
                   plaintext_sha256=result.plaintext_sha256, new_etag=etag)


async def rewrap_key(a: Attempt) -> Written:
    from workers.cse_transfer import rewrap  # loads cryptography: only for client-side objects
    cse = _settings(a)
    result = await rewrap(a.job, a.ref, a.head, _envelope(a), replace(cse, source=_source_keyring(a)))
    return await _cse_written(a, Strategy.REWRAP, result, _plain_size(a))


async def cse_copy(a: Attempt) -> Written:
    from workers.cse_transfer import rewrap  # loads cryptography: only for client-side objects
    cse = _settings(a)
    result = await rewrap(a.job, a.ref, a.head, _envelope(a), replace(cse, source=cse.target))  # as it is
    return await _cse_written(a, Strategy.CSE_COPY, result, _plain_size(a))


RUNS: dict[Strategy, Run] = {
    Strategy.SKIP: skip, Strategy.REFUSE: refuse, Strategy.UPDATE: update, Strategy.COPY: copy,
    Strategy.MULTIPART_COPY: multipart, Strategy.STREAM: stream, Strategy.CSE_ENCRYPT: cse_encrypt,
    Strategy.CSE_DECRYPT: cse_decrypt, Strategy.CSE_REENCRYPT: cse_reencrypt, Strategy.REWRAP: rewrap_key,
    Strategy.CSE_COPY: cse_copy,
}
