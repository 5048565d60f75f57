"""Resume an instruction file a killed run meant to write after its data (see `workers.cse_transfer`).

In place, an object whose envelope lives in `<key>.instruction` and is re-encrypted to a target that also
writes one: the data and its instruction file are two writes, and the old file is the only key of the old
data, so it can only be replaced after the data. Between the two writes the new data key must exist
somewhere: its wrapped envelope (no secret in it) is recorded in the checkpoint before the data write.

- the instruction file is written: the record is dropped;
- the instruction file is refused (a bucket policy, a passing fault beyond retries): the envelope is put in
  the object's own metadata instead (a metadata-only CopyObject guarded by the new ETag), so the object
  stays readable by any S3EC client; the object is failed with the reason, and the next run moves the
  envelope to its instruction file (a re-wrap);
- the run dies between the writes: the next run finds the record (`resume_envelope`), proves the object's
  data is the one the envelope opens (its GCM tag checks out), and puts the instruction file again.
"""

from __future__ import annotations

from workers.core.decide import Strategy
from workers.core.outcome import Written
from workers.cse import parse_envelope
from workers.errors import FatalError, RekeyError
from workers.job import Job
from workers.model import ObjectHead, ObjectRef


async def resume_envelope(job: Job, ref: ObjectRef, head: ObjectHead) -> Written | None:
    """A run killed between the data write and its instruction file: put the file now, if the object's
    data is the one the recorded envelope opens. None when there is nothing to resume."""
    # workers.cse_transfer loads cryptography: imported only for client-side objects
    from workers.cse_transfer import decrypted_sha256, forget_envelope, put_instruction, verify_cse
    journal = job.hooks.objects
    if journal is None or not job.in_place:
        return None
    pending = await journal.pending_envelope(ref)
    if pending is None:
        return None
    if head.etag == pending.old_etag:   # the data write never happened: the old file still fits the data
        await forget_envelope(job, ref)
        return None
    cse = job.cse
    try:
        env = parse_envelope(head.metadata, dict(pending.instruction))
        sha = None
        if cse is not None and cse.target is not None and cse.target.can_unwrap(env):
            sha = await decrypted_sha256(job, ref.key, head, env, cse.target)   # the GCM tag proves it
    except FatalError:
        raise
    except RekeyError:
        await forget_envelope(job, ref)   # someone else wrote the object since: not ours to complete
        return None
    await put_instruction(job, pending.dest_key, dict(pending.instruction))
    await forget_envelope(job, ref)
    etag = head.etag
    if job.verify and cse is not None:
        etag = (await verify_cse(job, cse, pending.dest_key, head.size - 16)).etag
    return Written(Strategy.CSE_REENCRYPT, plaintext_sha256=sha, new_etag=etag)
