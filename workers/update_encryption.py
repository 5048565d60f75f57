"""UpdateObjectEncryption: turn an SSE-S3 or SSE-KMS object into SSE-KMS in place, without copying its data.

What AWS documents for the operation (`PUT /{Bucket}/{Key+}?encryption`), and so what rekey checks first
(`why_not_applicable`): the object stays where it is (in place only); the source must be SSE-S3 or SSE-KMS
(not plaintext, DSSE-KMS or SSE-C); the new encryption can only be SSE-KMS, named by a full key ARN (not a
key id or alias) and, unless AWS Support enabled organisation keys, owned by the bucket owner's account;
no encryption context can be given; Object Lock retention or a legal hold on the object makes it answer
AccessDenied. It keeps the ETag, metadata, storage class and last-modified date and writes no new version.

Why it is never sent untested: SeaweedFS 4.48 and moto 5 do not implement it, and do not say so: both route
`PUT ...?encryption` to PutObject and answer 200, replacing the object's data with the request's XML body,
unencrypted (seen here; on a versioned bucket it becomes a new current version). So rekey first runs
`probe_update_encryption` on a scratch object, once per checkpoint, and `update_object_encryption` sends the
request only when that probe showed the endpoint really implements it (capability `CAP_UPDATE_ENCRYPTION`).
"""

from __future__ import annotations

import logging
import os

from workers.capabilities import Topic, flag
from workers.core.decide import why_not_applicable as why_not_applicable
from workers.errors import ObjectChangedError, ObjectError, RekeyError, UnsupportedError, VerifyError
from workers.job import Job
from workers.model import Encryption, Mode, ObjectHead, ObjectRef
from workers.probes import probe_key
from workers.s3 import S3, PutRequest
from workers.sse import satisfies

log = logging.getLogger("rekey.update_encryption")

CAP_UPDATE_ENCRYPTION = "update_object_encryption"   # True only after a probe showed it works
OPERATION = "update_object_encryption"


async def _send(s3: S3, bucket: str, key: str, target: Encryption, version_id: str | None = None) -> str | None:
    """One UpdateObjectEncryption to the target key; the ETag its answer carries, if any."""
    return await s3.update_object_encryption(bucket, key, kms_key_arn=str(target.kms_key_id),
                                             bucket_key=target.bucket_key, version_id=version_id)


async def update_object_encryption(job: Job, ref: ObjectRef, head: ObjectHead) -> bool:
    """Change one object to the target SSE-KMS key without copying it.

    Returns False, having sent nothing, when it does not apply (see `why_not_applicable`) or the endpoint
    was not shown to implement it; False too when the endpoint answers NotImplemented (the capability is
    then learned as False) or refuses this object (AccessDenied for Object Lock or a foreign key,
    InvalidRequest): the caller copies instead. True when the server accepted it: the caller then verifies
    with HeadObject (target key, same size, same ETag: the operation keeps the ETag).
    An object changed or deleted meanwhile raises `ObjectChangedError`, as a copy would.
    """
    why = why_not_applicable(head.encryption, job.target, in_place=job.in_place)
    if why is not None or job.caps.current.update_encryption is not True:
        return False
    version_id = ref.version_id or head.version_id
    try:
        etag = await _send(
            job.source, job.src.bucket, ref.key, job.target, version_id)
    except UnsupportedError:
        log.info("learned about this endpoint: %s = False (it answered NotImplemented)", CAP_UPDATE_ENCRYPTION)
        await job.caps.learn(flag(Topic.UPDATE_ENCRYPTION, False))
        return False
    except ObjectChangedError:
        raise
    except ObjectError as exc:
        log.info("UpdateObjectEncryption refused for %s, copying instead: %s", ref.key, exc.message)
        return False
    if etag is not None and head.etag and etag != head.etag:
        # What SeaweedFS and moto do: the request was stored as the object's new content.
        await job.caps.learn(flag(Topic.UPDATE_ENCRYPTION, False))
        raise VerifyError("UpdateObjectEncryption answered with a new ETag: the endpoint stored the request as "
                          "the object's data (it does not implement the operation)",
                          bucket=job.src.bucket, key=ref.key, op=OPERATION)
    return True


async def probe_update_encryption(s3: S3, bucket: str, prefix: str, target: Encryption) -> str | None:
    """Does this endpoint really implement UpdateObjectEncryption? None when it does, else why not.

    On a scratch SSE-S3 object: send it, then HEAD. Implemented means the object now has the target
    key and the same size and ETag. Every version of the scratch key is deleted afterwards.
    """
    why = why_not_applicable(Encryption(Mode.SSE_S3), target, in_place=True)
    if why is not None:
        return f"not applicable: {why}"
    key = probe_key(prefix)
    body = os.urandom(1024)
    try:
        put = await s3.put(PutRequest(bucket, key, body, encryption=Encryption(Mode.SSE_S3)))
        try:
            await _send(s3, bucket, key, target)
        except UnsupportedError:
            return "the endpoint answered NotImplemented"
        after = await s3.head(bucket, key)
        if after.size != len(body) or after.etag != put.etag:
            return ("the endpoint answered 200 but stored the request as the object's data "
                    f"({after.size} bytes, was {len(body)}): it does not implement UpdateObjectEncryption")
        if not satisfies(after.encryption, target):
            return f"the endpoint answered 200 but the object is {after.encryption.mode.value}"
        return None
    except RekeyError as exc:
        return f"probe failed: {exc}"
    finally:
        await _delete_all_versions(s3, bucket, key)


async def _delete_all_versions(s3: S3, bucket: str, key: str) -> None:
    try:
        listed = await s3.list_versions(bucket, prefix=key)
        versions = [v.version_id for v in listed.versions if v.key == key] + \
            [m.version_id for m in listed.delete_markers if m.key == key]
        for version_id in versions:
            await s3.delete(bucket, key, version_id=version_id)
        if not versions:
            await s3.delete(bucket, key)
    except RekeyError as exc:  # best effort: a scratch key left behind is named in the log
        log.warning("could not delete probe object s3://%s/%s: %s", bucket, key, exc)
