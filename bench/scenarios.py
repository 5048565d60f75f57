"""The benchmark scenarios (S1-S7): their sizes, how each is seeded, and how every result is checked."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
SEED_PART = 64 * MiB          # objects larger than this are seeded with multipart uploads
SEED_META = {"ContentType": "text/x-bench", "CacheControl": "max-age=77", "Metadata": {"origin": "bench"}}


@dataclass(frozen=True, slots=True)
class Scenario:
    """One workload: `count` objects of `size` bytes moved to `target`, bucket to bucket or in place."""

    name: str
    title: str
    count: int
    size: int
    target: str              # "sse-s3" | "sse-kms" | "cse" ("plain": checked as plaintext, for the ceiling)
    in_place: bool = False
    byte_check: bool = True  # GET every object and compare its SHA-256 with the seeded one
    rekey_only: bool = False  # peers cannot do this workload as given (or it is a rekey-only scale check)

    @property
    def total_bytes(self) -> int:
        return self.count * self.size

    def keys(self) -> list[str]:
        return [f"data/{i // 1000:03d}/obj-{i:06d}.bin" for i in range(self.count)]


def scenarios(quick: bool) -> dict[str, Scenario]:
    """The issue's scenarios; `quick` divides counts by about 10 and shrinks the large objects."""
    q = quick
    return {s.name: s for s in (
        Scenario("S1", "x 8 KiB plaintext, bucket to bucket, to SSE-S3", 200 if q else 2000, 8 * KiB, "sse-s3"),
        Scenario("S2", "x 8 KiB plaintext, bucket to bucket, to SSE-KMS", 200 if q else 2000, 8 * KiB, "sse-kms"),
        Scenario("S3", "plaintext, bucket to bucket, to SSE-S3", 8, (16 if q else 128) * MiB, "sse-s3"),
        Scenario("S4", "x 8 KiB in place to SSE-S3 (metadata must survive)", 200 if q else 2000, 8 * KiB,
                 "sse-s3", in_place=True),
        Scenario("S5", "plaintext, bucket to bucket, to client-side encryption", 4, (32 if q else 256) * MiB,
                 "cse"),
        Scenario("S6a", "x 1 KiB in place to SSE-KMS (scale: small)", 200 if q else 2000, 1 * KiB, "sse-kms",
                 in_place=True, rekey_only=True),
        Scenario("S6", "x 1 KiB in place to SSE-KMS (scale: large)", 2000 if q else 20000, 1 * KiB, "sse-kms",
                 in_place=True, rekey_only=True),
        Scenario("S7", "plaintext to client-side encryption (peak RSS)", 1, (256 if q else 2048) * MiB, "cse"),
    )}


def chunks(key: str, size: int, chunk: int = 16 * MiB) -> Iterator[bytes]:
    """The deterministic pseudo-random content of `key` (incompressible, reproducible for checking)."""
    rng = random.Random(key)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def content_sha256(key: str, size: int) -> str:
    h = hashlib.sha256()
    for part in chunks(key, size):
        h.update(part)
    return h.hexdigest()


def make_bucket(client: Any, bucket: str) -> None:
    client.create_bucket(Bucket=bucket)


def delete_bucket(client: Any, bucket: str) -> None:
    """Delete every object (and open upload) then the bucket; frees the server's disk between runs."""
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    except client.exceptions.NoSuchBucket:
        return
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                     "Quiet": True})
    for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    client.delete_bucket(Bucket=bucket)


def seed(client: Any, bucket: str, sc: Scenario, threads: int = 32) -> dict[str, str]:
    """Put the scenario's plaintext objects (with metadata for in-place checks); returns key -> SHA-256."""
    def put(key: str) -> tuple[str, str]:
        if sc.size <= SEED_PART:
            body = b"".join(chunks(key, sc.size))   # chunks() cuts at 16 MiB: join them all
            client.put_object(Bucket=bucket, Key=key, Body=body, **SEED_META)
            return key, hashlib.sha256(body).hexdigest()
        up = client.create_multipart_upload(Bucket=bucket, Key=key, **SEED_META)
        h, parts = hashlib.sha256(), []
        for n, body in enumerate(chunks(key, sc.size, SEED_PART), 1):
            h.update(body)
            r = client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=body)
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                         MultipartUpload={"Parts": parts})
        return key, h.hexdigest()

    with ThreadPoolExecutor(threads if sc.size <= MiB else 4) as pool:
        return dict(pool.map(put, sc.keys()))


@dataclass(slots=True)
class Check:
    """What verification found on one tool's result."""

    ok: bool
    checked: int
    problems: list[str]
    metadata_kept: bool | None = None   # in-place scenarios: Content-Type, Cache-Control, user metadata

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "problems": self.problems[:10],
                "problem_count": len(self.problems), "metadata_kept": self.metadata_kept}


def _cse_metadata(meta: dict[str, str]) -> bool:
    return any(k in meta for k in ("x-amz-key-v2", "x-amz-key", "x-amz-3", "x-amz-c"))


def verify(client: Any, bucket: str, sc: Scenario, expected: dict[str, str], *, kms_key: str,
           cse_digests: dict[str, str] | None = None, threads: int = 32) -> Check:
    """HeadObject every expected key (encryption, size, metadata), and compare bytes of every object.

    Client-side results are decrypted by the official client beforehand (`cse_digests`); here we check the
    envelope is present, the stored object is not the plaintext, and the decrypted digest matches.
    """
    problems: list[str] = []
    meta_kept = True

    def one(key: str) -> tuple[list[str], bool]:
        errs: list[str] = []
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            return [f"{key}: HEAD failed: {exc}"], False
        sse = head.get("ServerSideEncryption")
        meta = head.get("Metadata", {})
        if sc.target == "sse-s3" and sse != "AES256":
            errs.append(f"{key}: ServerSideEncryption={sse!r}, wanted AES256")
        if sc.target == "sse-kms" and (sse != "aws:kms" or kms_key not in str(head.get("SSEKMSKeyId", ""))):
            errs.append(f"{key}: ServerSideEncryption={sse!r} key={head.get('SSEKMSKeyId')!r}, wanted aws:kms")
        kept = (head.get("ContentType") == SEED_META["ContentType"]
                and head.get("CacheControl") == SEED_META["CacheControl"] and meta.get("origin") == "bench")
        if sc.target == "cse":
            if not _cse_metadata(meta):
                errs.append(f"{key}: no client-side envelope metadata ({sorted(meta)})")
            got = (cse_digests or {}).get(key)
            if got != expected[key]:
                errs.append(f"{key}: decrypted digest {got} != seeded {expected[key]}")
            return errs, kept
        if head["ContentLength"] != sc.size:
            errs.append(f"{key}: size {head['ContentLength']} != {sc.size}")
        if sc.byte_check and not errs:
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            h = hashlib.sha256()
            for part in iter(lambda: body.read(8 * MiB), b""):
                h.update(part)
            if h.hexdigest() != expected[key]:
                errs.append(f"{key}: bytes differ from the seeded object")
        return errs, kept

    with ThreadPoolExecutor(threads if sc.size <= MiB else 4) as pool:
        for errs, kept in pool.map(one, sorted(expected)):
            problems += errs
            meta_kept = meta_kept and kept
    listed = {o["Key"] for p in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for o in p.get("Contents", [])}
    extra = listed - set(expected)
    if extra:
        problems.append(f"{len(extra)} unexpected object(s), e.g. {sorted(extra)[0]}")
    return Check(not problems, len(expected), problems, meta_kept if sc.in_place or sc.target == "cse" else None)
