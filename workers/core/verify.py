"""After every write: the result is in the target mode and key, of the right size; copy answers calibrated.

verify = "auto" trusts what CopyObject answers on a path (source mode -> target mode) only after
CALIBRATION answers agreed with the HeadObject that followed them; one disagreement, never.
"""

from __future__ import annotations

from workers import sse
from workers.capabilities import response_truthful
from workers.errors import VerifyError
from workers.job import Job
from workers.model import Mode, ObjectHead
from workers.s3 import Written

CALIBRATION = 3  # objects per path verified both ways before copy answers are trusted


async def check_written(job: Job, key: str, size: int) -> tuple[ObjectHead, str | None]:
    """HeadObject on the result; returns it with the reason it is not what was asked, or None."""
    read = job.target if job.target.mode == Mode.SSE_C else None
    head = await job.retried(f"verify {key}", lambda: job.dest.head(job.dst.bucket, key, read_enc=read))
    why = sse.mismatch(head.encryption, job.target)
    if why is None and head.size != size:
        why = f"size is {head.size}, source had {size}"
    return head, why


def verify_error(job: Job, key: str, why: str) -> VerifyError:
    return VerifyError(f"written object is not as asked: {why}", bucket=job.dst.bucket, key=key, op="verify")


async def verified(job: Job, key: str, size: int) -> ObjectHead:
    """HeadObject on the result, raising `VerifyError` when it is not what was asked."""
    written, why = await check_written(job, key, size)
    if why is not None:
        raise verify_error(job, key, why)
    return written


def response_trusted(job: Job, source_mode: Mode) -> bool:
    return job.caps.current.copy_response_truthful.get((source_mode, job.target.mode)) is True


async def calibrate(job: Job, source_mode: Mode, response: Written, written: ObjectHead) -> None:
    """Compare what CopyObject answered with what HeadObject then reports (verify = "auto")."""
    path = (source_mode, job.target.mode)
    if job.caps.current.copy_response_truthful.get(path) is not None:
        return
    answered = response.encryption
    if answered.mode != written.encryption.mode or answered.key_md5 != written.encryption.key_md5 or \
            not sse.kms_key_matches(answered.kms_key_id, written.encryption.kms_key_id):
        await job.caps.learn(response_truthful(path, False))
        return
    tally = job.hooks.tally.calibration
    tally[path] = tally.get(path, 0) + 1
    if tally[path] >= CALIBRATION:
        await job.caps.learn(response_truthful(path, True))
