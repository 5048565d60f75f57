"""`rekey verify -c FILE [--deep]`: check that every object the checkpoint calls done is really right.

"Done" covers both finished states: `done` (rekey wrote it) and `skipped` (already in the target
encryption, e.g. an in-place copy that completed just before a crash). Without `--deep`, for each, one
HeadObject on its destination key proves that the object exists, that the server reports the target
encryption (mode, and the KMS key id or SSE-C key MD5), that its size is the source's, and, where the run
recorded the ETag of what it wrote, that nobody replaced it since. It proves nothing about the bytes.

With `--deep` the whole object is also read back (in part-size ranges, hashed as it streams, so memory
stays at one part per object in flight) and compared with a checksum recorded before rekey touched it:

- `objects.plaintext_sha256`, when the run recorded one (rekey digested the plaintext it streamed): the
  digest of what the server returns now must equal it. This proves the object decrypts to exactly the
  bytes rekey read from the source. The digest is `hmac-sha256:` HMAC-SHA256 under a key derived (HKDF)
  from the object's data key, never a bare hash of the plaintext: reading the checkpoint confirms no guess.
  A client-side source decrypted to a server-side target is digested under the source's data key, which
  is unwrapped again from the source object bucket to bucket; in place it is gone: `size_only`.
  (Checkpoints of earlier versions hold a bare SHA-256, still compared as such.)
- otherwise, when the source ETag recorded at listing (`objects.etag`) is a plain 32-hex MD5 (a single
  PutObject of an unencrypted, SSE-S3 or, on some servers, SSE-KMS object): the MD5 of what the server
  returns now must equal it. Server-side copies never pass the data through rekey, so this is the only
  independent witness: it proves the object decrypts to the bytes the source held when it was listed, on
  the assumption that the source's ETag was the MD5 of its content (true for S3 single-part uploads
  without SSE-C/SSE-KMS; a server that does otherwise would show up here as a mismatch, never a false pass).
- otherwise (a multipart source ETag `md5-N`, or an SSE-C/SSE-KMS source ETag on AWS, which is not an MD5):
  there is nothing to compare with. The object was read fully and its length checked, which proves it is
  readable and decrypts without error, but not that its bytes are the original ones. Such objects are
  listed as `size_only` in the report, never counted as a mismatch or as proven.

Mismatches are printed one per line and listed in the JSON report; the exit code is 1 when there is any.
Client-side targets (`mode = "cse"`): the target keyring unwraps the data key and the whole object is
decrypted with its GCM tag checked; the plaintext's digest (under the data key just unwrapped) must equal
the one recorded while rekey encrypted it (`sha256`).
With `--deep` bucket to bucket, the copy's user metadata (S3EC envelope keys aside), system metadata and
tags must also be the source's. A re-wrapped object has no recorded checksum and is proven to decrypt and
authenticate (`tag`). An RSA target configured with only the public key cannot decrypt: `size_only`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from engine.checkpoint import ObjectRow
from engine.config import Config
from workers import sse
from workers.cse_transfer import (
    DIGEST_PREFIX,
    PlaintextDigest,
    decrypted_sha256,
    dest_envelope,
    digest_key,
    load_envelope,
    user_metadata,
)
from workers.errors import FatalError, KeyRequiredError, RekeyError
from workers.job import Job
from workers.model import Encryption, Mode, ObjectHead

_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True)
class Finding:
    """One object checked: how its content was proven (`sha256`, `md5`, `tag`, `size_only`, `head`) or what is
    wrong."""

    key: str
    dest_key: str
    proof: str
    problem: str | None = None


def plain_md5(etag: str) -> str | None:
    """The MD5 an ETag stands for, when it is a plain single-part MD5; else None."""
    value = etag.strip().strip('"').lower()
    return value if _PLAIN_MD5.match(value) else None


def _update(hashes: tuple[Any, ...], chunk: bytes) -> None:
    for h in hashes:
        h.update(chunk)


async def read_digests(job: Job, key: str, size: int, mac: PlaintextDigest | None = None) -> tuple[str, str, int]:
    """(sha256 hex, md5 hex, bytes read) of the destination object, read in part-size ranges (`mac` is fed too)."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    hashes: tuple[Any, ...] = (sha, md5) if mac is None else (sha, md5, mac)
    read_enc = job.target if job.target.mode == Mode.SSE_C else None
    done = 0
    while done < size:
        end = min(size, done + job.part_size) - 1
        chunk = await job.dest.get_range(job.dst.bucket, key, done, end, read_enc=read_enc)
        await anyio.to_thread.run_sync(_update, hashes, chunk)
        done += len(chunk)
    return sha.hexdigest(), md5.hexdigest(), done


async def check_object(job: Job, row: ObjectRow, *, deep: bool) -> Finding:
    dest_key = job.dest_key(row.key)
    read_enc = job.target if job.target.mode == Mode.SSE_C else None
    try:
        head = await job.dest.head(job.dst.bucket, dest_key, read_enc=read_enc)
    except FatalError:
        raise
    except RekeyError as exc:
        return Finding(row.key, dest_key, "head", f"cannot read the object: {exc.message}")
    client_side = job.cse is not None and job.cse.target is not None
    problem = None if client_side else sse.mismatch(head.encryption, job.target)
    # A client-side object is its plaintext and a 16-byte tag; a re-wrapped one keeps the source's size.
    expected = row.size + 16 if client_side and row.source_mode != Mode.CSE else row.size
    decrypted = not client_side and row.source_mode == Mode.CSE   # GCM: minus its 16-byte tag; CBC: padding
    fits = row.size - 16 <= head.size < row.size if decrypted else head.size == expected
    if problem is None and not fits:
        problem = f"size is {head.size}, expected {expected if not decrypted else row.size - 16} from the " \
                  f"source's {row.size}"
    if problem is None and row.new_etag and head.etag != row.new_etag:
        problem = f"ETag is {head.etag}, rekey wrote {row.new_etag}: replaced since the run"
    if problem is not None or not deep:
        return Finding(row.key, dest_key, "head", problem)
    problem = await attributes_differ(job, row, head)
    if problem is not None:
        return Finding(row.key, dest_key, "head", problem)
    if client_side:
        return await check_client_side(job, row, dest_key, head)
    keyed = bool(row.plaintext_sha256 and row.plaintext_sha256.startswith(DIGEST_PREFIX))
    try:
        mac = await source_digest(job, row) if keyed else None
        sha, md5, nbytes = await read_digests(job, dest_key, head.size, mac)
    except FatalError:
        raise
    except RekeyError as exc:
        return Finding(row.key, dest_key, "head", f"cannot read the data back: {exc.message}")
    if nbytes != head.size:
        return Finding(row.key, dest_key, "size_only", f"read {nbytes} bytes, HeadObject said {head.size}")
    if job.target.mode != Mode.CSE and row.plaintext_sha256 and (mac is not None or not keyed):
        ok = (mac.text() if mac is not None else sha) == row.plaintext_sha256
        return Finding(row.key, dest_key, "sha256", None if ok else "SHA-256 differs from the plaintext rekey read")
    if keyed:
        return Finding(row.key, dest_key, "size_only")  # in place: the source's data key is gone with it
    source_md5 = plain_md5(row.etag)
    if job.target.mode != Mode.CSE and source_md5 is not None:
        ok = md5 == source_md5
        return Finding(row.key, dest_key, "md5", None if ok else f"MD5 {md5} differs from the source ETag {row.etag}")
    return Finding(row.key, dest_key, "size_only")


async def source_digest(job: Job, row: ObjectRow) -> PlaintextDigest | None:
    """The keyed digest of a client-side source decrypted to a server-side target is under the source's data
    key: unwrapped again from the source object when it still exists (bucket to bucket), else unknown."""
    if job.in_place or job.cse is None or job.cse.source is None:
        return None
    head = await job.source.head(job.src.bucket, row.key)
    env = await load_envelope(job, row.ref(), head, look_for_file=True)
    if env is None:
        return None
    return PlaintextDigest(digest_key(await job.cse.source.unwrap(env)))


_ATTRIBUTES = ("content_type", "content_encoding", "content_disposition", "content_language", "cache_control",
               "website_redirect")


async def attributes_differ(job: Job, row: ObjectRow, head: ObjectHead) -> str | None:
    """--deep, bucket to bucket: user metadata (without S3EC envelope keys), system metadata and tags must be the
    source's. In place the source is the object itself: nothing else to compare with."""
    if job.in_place:
        return None
    try:
        src_enc = Encryption(Mode.SSE_C, sse_c_key=job.source_sse_c_key) if job.source_sse_c_key else None
        try:
            source = await job.source.head(job.src.bucket, row.key, read_enc=src_enc)
        except KeyRequiredError:
            source = await job.source.head(job.src.bucket, row.key)
        src_tags = await job.source.get_tags(job.src.bucket, row.key)
        dst_tags = await job.dest.get_tags(job.dst.bucket, head.key)
    except FatalError:
        raise
    except RekeyError as exc:
        return f"cannot compare metadata and tags with the source: {exc.message}"
    if user_metadata(source) != user_metadata(head):
        return "user metadata differs from the source's"
    differs = [name for name in _ATTRIBUTES if getattr(source, name) != getattr(head, name)]
    if differs:
        return f"{', '.join(differs)} differ from the source's"
    if src_tags != dst_tags:
        return "tags differ from the source's"
    return None


async def check_client_side(job: Job, row: ObjectRow, dest_key: str, head: ObjectHead) -> Finding:
    """--deep for a client-side target: unwrap the data key with the target keyring, decrypt the whole
    object (GCM tag checked), and compare the plaintext's SHA-256 with the one recorded while streaming.
    A re-wrapped object (no recorded checksum) is proven to decrypt and authenticate: proof `tag`."""
    assert job.cse is not None and job.cse.target is not None
    try:
        env = await dest_envelope(job, dest_key, head, look_for_file=job.cse.instruction_file)
        if env is None:
            return Finding(row.key, dest_key, "head", "no client-side envelope on the written object")
        if not job.cse.target.can_unwrap(env):
            return Finding(row.key, dest_key, "size_only")  # e.g. an RSA target with only the public key
        sha = await decrypted_sha256(job, dest_key, head, env, job.cse.target)
    except FatalError:
        raise
    except RekeyError as exc:
        return Finding(row.key, dest_key, "head", f"does not decrypt: {exc.message}")
    if row.plaintext_sha256:
        ok = sha == row.plaintext_sha256
        return Finding(row.key, dest_key, "sha256", None if ok else "decrypted SHA-256 differs from the plaintext "
                       "rekey encrypted")
    return Finding(row.key, dest_key, "tag")


async def verify_run(config: Config, rows: list[ObjectRow], *, deep: bool,
                     on_finding: Callable[[Finding], None]) -> list[Finding]:
    from engine.job import check_transport, make_job, open_clients
    from engine.retry import Retrier, Throttle
    check_transport(config)  # --deep reads SSE-C objects with their key
    throttle = Throttle(config.run.concurrency, max_rps=config.run.max_requests_per_second)
    findings: list[Finding] = []
    async with open_clients(config, Retrier(throttle, max_retries=config.run.max_retries)) as (source, dest, kms):
        job = make_job(config, source, dest, None, kms)
        send, recv = anyio.create_memory_object_stream[ObjectRow](config.run.concurrency)

        async def feed() -> None:
            async with send:
                for row in rows:
                    await send.send(row)

        async def work(rx: Any) -> None:
            async with rx:
                async for row in rx:
                    finding = await check_object(job, row, deep=deep)
                    findings.append(finding)
                    on_finding(finding)

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            for _ in range(config.run.concurrency):
                tg.start_soon(work, recv.clone())
            recv.close()
    return findings
