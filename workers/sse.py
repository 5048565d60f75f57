"""Server-side encryption as request parameters and as observed in responses.

The only module that knows the S3 parameter names for SSE; everything else passes `Encryption` records.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from workers.model import Encryption, Mode

_MODE_BY_HEADER = {"AES256": Mode.SSE_S3, "aws:kms": Mode.SSE_KMS, "aws:kms:dsse": Mode.DSSE_KMS}
_HEADER_BY_MODE = {v: k for k, v in _MODE_BY_HEADER.items()}


def write_params(enc: Encryption) -> dict[str, Any]:
    """Parameters for PutObject, CreateMultipartUpload and CopyObject's destination side."""
    params: dict[str, Any] = {}
    if enc.mode in (Mode.SSE_S3, Mode.SSE_KMS, Mode.DSSE_KMS):
        params["ServerSideEncryption"] = _HEADER_BY_MODE[enc.mode]
    if enc.mode in (Mode.SSE_KMS, Mode.DSSE_KMS) and enc.kms_key_id:
        params["SSEKMSKeyId"] = enc.kms_key_id
    if enc.mode == Mode.SSE_KMS and enc.context:
        params["SSEKMSEncryptionContext"] = base64.b64encode(
            json.dumps(dict(enc.context), separators=(",", ":"), sort_keys=True).encode()
        ).decode("ascii")
    if enc.mode == Mode.SSE_KMS and enc.bucket_key is not None:
        params["BucketKeyEnabled"] = enc.bucket_key
    if enc.mode == Mode.SSE_C:
        params.update(customer_key_params(enc))
    return params


def customer_key_params(enc: Encryption, prefix: str = "") -> dict[str, Any]:
    """SSE-C key parameters for reads (HEAD/GET), UploadPart and the destination of a copy.

    `prefix="CopySource"` gives the copy-source form. botocore base64-encodes the key and adds its
    MD5 for both forms, but only when no MD5 is passed, so none is.
    """
    if enc.mode != Mode.SSE_C or enc.sse_c_key is None:
        return {}
    return {
        f"{prefix}SSECustomerAlgorithm": "AES256",
        f"{prefix}SSECustomerKey": enc.sse_c_key.raw,
    }


def read_params(enc: Encryption | None) -> dict[str, Any]:
    """Parameters a HEAD or GET of an object under `enc` needs (SSE-C key only)."""
    return customer_key_params(enc) if enc is not None else {}


def observed(response: Mapping[str, Any]) -> Encryption:
    """The encryption a HeadObject / GetObject / CopyObject / PutObject response reports."""
    algorithm = response.get("SSECustomerAlgorithm")
    if algorithm:
        # SeaweedFS sends the MD5 header twice ("X, X"): keep the first value.
        md5 = str(response.get("SSECustomerKeyMD5") or "").split(",")[0].strip()
        return Encryption(Mode.SSE_C, sse_c_key_md5=md5 or None)
    sse = response.get("ServerSideEncryption")
    mode = _MODE_BY_HEADER.get(str(sse), Mode.NONE) if sse else Mode.NONE
    kms_key = response.get("SSEKMSKeyId") if mode in (Mode.SSE_KMS, Mode.DSSE_KMS) else None
    bucket_key = response.get("BucketKeyEnabled") if mode == Mode.SSE_KMS else None
    return Encryption(mode, kms_key_id=kms_key, bucket_key=bucket_key)


def kms_key_matches(wanted: str | None, seen: str | None) -> bool:
    """Does an observed KMS key id (often a full ARN) name the wanted key (id, ARN or alias)?"""
    if not wanted:
        return True
    if not seen:
        return False
    if wanted == seen:
        return True
    # arn:aws:kms:region:acct:key/<id>  versus a bare <id>
    return seen.endswith("/" + wanted) or wanted.endswith("/" + seen)


def satisfies(seen: Encryption, wanted: Encryption) -> bool:
    """Is an object observed as `seen` already in the `wanted` server-side state?"""
    if seen.mode != wanted.mode:
        return False
    if wanted.mode in (Mode.SSE_KMS, Mode.DSSE_KMS):
        if not kms_key_matches(wanted.kms_key_id, seen.kms_key_id):
            return False
        if wanted.bucket_key is not None and seen.bucket_key is not None and seen.bucket_key != wanted.bucket_key:
            return False
    if wanted.mode == Mode.SSE_C:
        return seen.key_md5 is not None and seen.key_md5 == wanted.key_md5
    return True


def mismatch(seen: Encryption, wanted: Encryption) -> str | None:
    """Why `seen` is not `wanted`, in words (no key material), or None when it is."""
    if satisfies(seen, wanted):
        return None
    if seen.mode != wanted.mode:
        return f"server reports {seen.mode.value}, wanted {wanted.mode.value}"
    if wanted.mode == Mode.SSE_C:
        return f"server reports SSE-C key MD5 {seen.key_md5}, wanted {wanted.key_md5}"
    if not kms_key_matches(wanted.kms_key_id, seen.kms_key_id):
        return f"server reports KMS key {seen.kms_key_id}, wanted {wanted.kms_key_id}"
    return f"server reports bucket key {seen.bucket_key}, wanted {wanted.bucket_key}"
