"""Client-side peers for S5/S7, run in the bench tools venv (boto3 + AWS's official S3 encryption client).

    python s3ec_tool.py encrypt  SRC DST KEY_ARN   # official client: GET, then encrypted multipart upload
    python s3ec_tool.py plain    SRC DST           # ceiling: boto3 GET then multipart PUT, no crypto
    python s3ec_tool.py digests  BUCKET KEY_ARN    # decrypt every object with the official client, print SHA-256s

Endpoints come from BENCH_S3_URL and BENCH_KMS_URL; credentials from the AWS environment variables.
Objects are streamed in PART-sized pieces (never held whole), one thread per object.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config

PART = 16 * 1024 * 1024
REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")


def s3() -> Any:
    cfg = Config(s3={"addressing_style": "path"}, max_pool_connections=32,
                 request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return boto3.client("s3", endpoint_url=os.environ["BENCH_S3_URL"], region_name=REGION, config=cfg)


def official(key_arn: str) -> Any:
    from s3_encryption import S3EncryptionClient, S3EncryptionClientConfig
    from s3_encryption.materials.kms_keyring import KmsKeyring
    kms = boto3.client("kms", endpoint_url=os.environ["BENCH_KMS_URL"], region_name=REGION)
    return S3EncryptionClient(s3(), S3EncryptionClientConfig(keyring=KmsKeyring(kms, key_arn)))


def keys(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for p in pages for o in p.get("Contents", [])]


def pieces(body: Any) -> Any:
    """(piece, is_last) pairs of a streaming body; looks one piece ahead to know the last."""
    prev = body.read(PART)
    while True:
        nxt = body.read(PART)
        yield prev, not nxt
        if not nxt:
            return
        prev = nxt


def copy(src: str, dst: str, key: str, writer: Any, reader: Any, encrypt: bool) -> None:
    body = reader.get_object(Bucket=src, Key=key)["Body"]
    up = writer.create_multipart_upload(Bucket=dst, Key=key)
    parts = []
    for n, (data, last) in enumerate(pieces(body), 1):
        extra = {"IsLastPart": True} if (encrypt and last) else {}
        r = writer.upload_part(Bucket=dst, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=data, **extra)
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    writer.complete_multipart_upload(Bucket=dst, Key=key, UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": parts})


def digest(client: Any, bucket: str, key: str) -> str:
    h = hashlib.sha256()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    for part in iter(lambda: body.read(PART), b""):
        h.update(part)
    return h.hexdigest()


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd in ("encrypt", "plain"):
        src, dst = argv[1], argv[2]
        reader = s3()
        writer = official(argv[3]) if cmd == "encrypt" else reader
        todo = keys(reader, src)
        with ThreadPoolExecutor(max(1, min(8, len(todo)))) as pool:
            list(pool.map(lambda k: copy(src, dst, k, writer, reader, cmd == "encrypt"), todo))
        return 0
    if cmd == "digests":
        client = official(argv[2])
        todo = keys(client, argv[1])
        with ThreadPoolExecutor(max(1, min(4, len(todo)))) as pool:
            print(json.dumps(dict(zip(todo, pool.map(lambda k: digest(client, argv[1], k), todo), strict=True))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
