"""Read-back calibration: a write path is trusted only after its first objects read back byte for byte.

A server can answer 200 and report the right encryption while leaving data that no longer decrypts
(SeaweedFS's UploadPartCopy into SSE-C; RustFS's same-key copies in 2026). So for every path (source mode,
target mode, route, in place or to a new key) the objects written while the path is not yet decided are
read back whole and their SHA-256 compared with the source's, hashed before the write. After
`CALIBRATION_OBJECTS` agreements the path is trusted (capability `readback_<path>` = True, persisted in the
checkpoint, listed in the report); one disagreement turns it off (False) and its objects take the streamed
path. In place, the source bytes of a server-side write under calibration are held in memory (up to
`HOLD_MAX`), so an object a broken path damaged is written again from them; a larger object streams
while its path is undecided.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import anyio

from workers import learned
from workers.errors import CorruptObjectError
from workers.job import Job
from workers.model import Encryption, Mode, ObjectHead, ObjectRef

log = logging.getLogger("rekey.readback")

CAP_READBACK = "readback_{path}"
CALIBRATION_OBJECTS = 2
HOLD_MAX = 256 * 1024 * 1024    # in place: largest object whose bytes are held while its path is undecided
_CHUNK = 8 * 1024 * 1024
WHOLE_MAX = 64 * 1024 * 1024    # objects up to this size are read back with one plain GET, larger in ranges
_OFFLOAD = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Calibration:
    """One object under calibration: its path, the source's SHA-256, and (in place) the source bytes."""

    path: str
    sha256: str
    held: bytes | None = field(default=None, repr=False)


def path_of(job: Job, head: ObjectHead, action: str) -> str:
    """e.g. "sse-kms_to_sse-c_multipart-copy_in-place"."""
    where = "in-place" if job.in_place else "new-key"
    return f"{head.encryption.mode.value}_to_{job.target.mode.value}_{action}_{where}"


def state(job: Job, path: str) -> bool | None:
    """True: trusted; False: turned off (its objects stream); None: still calibrating."""
    if job.caps is None:
        return True   # no capability record (unit use): nothing to calibrate against
    return learned.known(job, CAP_READBACK.format(path=path))


def can_hold(job: Job, head: ObjectHead) -> bool:
    return not job.in_place or head.size <= HOLD_MAX


async def _digest(chunks: list[bytes] | None, data: bytes, hasher: hashlib._Hash) -> None:
    if len(data) > _OFFLOAD:
        await anyio.to_thread.run_sync(hasher.update, data)
    else:
        hasher.update(data)
    if chunks is not None:
        chunks.append(data)


async def _read_hash(job: Job, *, source: bool, key: str, size: int, read_enc: Encryption | None,
                     version_id: str | None = None, etag: str | None = None,
                     hold: bool = False) -> tuple[str, bytes | None]:
    s3, bucket = (job.source, job.src.bucket) if source else (job.dest, job.dst.bucket)
    hasher = hashlib.sha256()
    chunks: list[bytes] | None = [] if hold else None
    if size <= WHOLE_MAX:
        # One plain GET, as a reader would do: SeaweedFS serves every range of an SSE-C object made by
        # UploadPartCopy and fails the whole GET (500).
        fetched = await s3.get(bucket, key, read_enc=read_enc, version_id=version_id, if_match=etag)
        if len(fetched.data) != size:
            raise CorruptObjectError(f"read back {len(fetched.data)} bytes, expected {size}", bucket=bucket,
                                     key=key, op="read back")
        await _digest(chunks, fetched.data, hasher)
        return hasher.hexdigest(), (fetched.data if hold else None)
    start = 0
    while start < size:
        end = min(size, start + _CHUNK) - 1
        data = await s3.get_range(bucket, key, start, end, read_enc=read_enc, if_match=etag, version_id=version_id)
        await _digest(chunks, data, hasher)
        start = end + 1
    return hasher.hexdigest(), (b"".join(chunks) if chunks is not None else None)


async def before_write(job: Job, ref: ObjectRef, head: ObjectHead, path: str, *, hold: bool) -> Calibration:
    """Hash the source (holding its bytes when `hold`) before a write on an undecided path."""
    read = Encryption(Mode.SSE_C, sse_c_key=job.source_sse_c_key) \
        if head.encryption.mode == Mode.SSE_C and job.source_sse_c_key is not None else None
    sha, held = await _read_hash(job, source=True, key=ref.key, size=head.size, read_enc=read,
                                 version_id=ref.version_id, etag=head.etag, hold=hold)
    return Calibration(path, sha, held)


async def after_write(job: Job, dest_key: str, size: int, cal: Calibration) -> str | None:
    """Read the written object back whole; None when its bytes are the source's (the path counts one more
    agreement), else why not (the path is turned off)."""
    read = job.target if job.target.mode == Mode.SSE_C else None
    try:
        sha, _ = await _read_hash(job, source=False, key=dest_key, size=size, read_enc=read)
    except Exception as exc:   # a server error here is the finding: the object does not read back
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            raise
        why: str | None = f"reading it back failed ({exc})"
    else:
        why = None if sha == cal.sha256 else "its bytes read back differ from the source's (SHA-256)"
    name = CAP_READBACK.format(path=cal.path)
    if why is not None:
        log.warning("%s: path %s fails read-back calibration: %s; its objects stream from now on",
                    dest_key, cal.path, why)
        await learned.learn(job, name, False)
        return why
    count = job.calibration.get(name, 0) + 1
    job.calibration[name] = count
    if count >= CALIBRATION_OBJECTS and learned.known(job, name) is None:
        log.info("path %s calibrated: %d objects read back right", cal.path, count)
        await learned.learn(job, name, True)
    return None
