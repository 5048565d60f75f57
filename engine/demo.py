"""`rekey demo`: a real migration on a local sandbox, seeded with mixed encryption, shown before and after."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.sandbox import Sandbox, SandboxInfo, create_kms_key

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Seed:
    key: str
    size: int
    mode: str  # none | sse-s3 | sse-kms | sse-c


def seed_plan(count: int) -> list[Seed]:
    """`count` objects cycling through the four source modes, 0 bytes to 256 KiB, plus two 40 MiB ones."""
    modes = ("none", "sse-s3", "sse-kms", "sse-c")
    sizes = (0, 1, 100, 4096, 65536, 262144, 17, 1000)
    seeds = [Seed(f"data/{modes[i % 4]}/obj-{i:04d}.bin", sizes[i % len(sizes)], modes[i % 4])
             for i in range(max(0, count - 2))]
    seeds.append(Seed("data/large/big-plain.bin", 40 * MiB, "none"))
    seeds.append(Seed("data/large/big-sse-s3.bin", 40 * MiB, "sse-s3"))
    return seeds


def boto_client(info: SandboxInfo) -> Any:
    import botocore.config
    import botocore.session
    session = botocore.session.get_session()
    cfg = botocore.config.Config(s3={"addressing_style": "path"}, max_pool_connections=32,
                                 request_checksum_calculation="when_required",
                                 response_checksum_validation="when_required")
    return session.create_client("s3", endpoint_url=info.s3_https, region_name=info.region, verify=info.ca_bundle,
                                 aws_access_key_id=info.access_key, aws_secret_access_key=info.secret_key,
                                 config=cfg)


def seed_bucket(client: Any, bucket: str, seeds: list[Seed], *, kms_key: str, sse_c_key: bytes) -> None:
    client.create_bucket(Bucket=bucket)

    def put(seed: Seed) -> None:
        extra: dict[str, Any] = {"ContentType": "application/octet-stream", "CacheControl": "max-age=60",
                                 "Metadata": {"origin": "rekey-demo", "mode-at-seed": seed.mode},
                                 "Tagging": f"seeded=yes&mode={seed.mode}"}
        if seed.mode == "sse-s3":
            extra["ServerSideEncryption"] = "AES256"
        elif seed.mode == "sse-kms":
            extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key)
        elif seed.mode == "sse-c":
            extra.update(SSECustomerAlgorithm="AES256", SSECustomerKey=sse_c_key)
        body = os.urandom(seed.size)
        if seed.size > 16 * MiB:
            up = client.create_multipart_upload(Bucket=bucket, Key=seed.key, **extra)
            parts = []
            for n, start in enumerate(range(0, seed.size, 8 * MiB), 1):
                r = client.upload_part(Bucket=bucket, Key=seed.key, UploadId=up["UploadId"], PartNumber=n,
                                       Body=body[start:start + 8 * MiB])
                parts.append({"PartNumber": n, "ETag": r["ETag"]})
            client.complete_multipart_upload(Bucket=bucket, Key=seed.key, UploadId=up["UploadId"],
                                             MultipartUpload={"Parts": parts})
        else:
            client.put_object(Bucket=bucket, Key=seed.key, Body=body, **extra)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, seeds))


def modes_in_bucket(client: Any, bucket: str, sse_c_key: bytes) -> Counter[str]:
    """Objects per mode as HeadObject reports them (SSE-C objects answer only with their key)."""
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]

    def mode(key: str) -> str:
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except client.exceptions.ClientError:
            client.head_object(Bucket=bucket, Key=key, SSECustomerAlgorithm="AES256", SSECustomerKey=sse_c_key)
            return "sse-c"
        return {"AES256": "sse-s3", "aws:kms": "sse-kms"}.get(str(head.get("ServerSideEncryption")), "none")

    with ThreadPoolExecutor(16) as pool:
        return Counter(pool.map(mode, keys))


def write_config(path: Path, info: SandboxInfo, *, bucket: str, kms_key: str, sse_c_file: Path,
                 checkpoint: Path) -> None:
    path.write_text(
        f'[source]\nbucket = "{bucket}"\nendpoint_url = "{info.s3_https}"\nregion = "{info.region}"\n'
        f'ca_bundle = "{info.ca_bundle}"\nsse_c_key_file = "{sse_c_file}"\n\n'
        f'[target]\nmode = "sse-kms"\nkms_key_id = "{kms_key}"\n\n'
        f'[run]\ncheckpoint = "{checkpoint}"\nconcurrency = 16\npart_size = "8MiB"\n'
        f'multipart_threshold = "16MiB"\n', encoding="utf-8")


def _table(before: Counter[str], after: Counter[str]) -> str:
    modes = sorted(set(before) | set(after))
    lines = [f"  {'mode':<10} {'before':>7} {'after':>7}"]
    lines += [f"  {m:<10} {before.get(m, 0):>7} {after.get(m, 0):>7}" for m in modes]
    return "\n".join(lines)


def run_demo(*, objects: int = 200, workdir: str | None = None,
             run_command: Callable[[str, str, bool], int]) -> int:
    """`run_command(config, report, quiet)` is `rekey run` in this process, returning its exit code."""
    base = Path(workdir or tempfile.mkdtemp(prefix="rekey-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    with Sandbox() as info:
        os.environ.update(info.env())
        old_key, new_key = create_kms_key(info, "demo-old"), create_kms_key(info, "demo-new")
        sse_c = secrets.token_bytes(32)
        sse_c_file = base / "sse-c.key"
        sse_c_file.write_bytes(sse_c)
        sse_c_file.chmod(0o600)
        client = boto_client(info)
        bucket = "rekey-demo"
        seeds = seed_plan(objects)
        print(f"seeding {len(seeds)} objects in s3://{bucket} on {info.s3_https} ...", flush=True)
        seed_bucket(client, bucket, seeds, kms_key=old_key, sse_c_key=sse_c)
        before = modes_in_bucket(client, bucket, sse_c)
        config = base / "rekey.toml"
        write_config(config, info, bucket=bucket, kms_key=new_key, sse_c_file=sse_c_file,
                     checkpoint=base / "rekey.sqlite")
        print(f"\n$ rekey run -c {config} --report {base / 'report.json'}", flush=True)
        code = run_command(str(config), str(base / "report.json"), False)
        after = modes_in_bucket(client, bucket, sse_c)
        print("\nobjects by encryption, as HeadObject reports them:")
        print(_table(before, after))
        # A second run with a fresh checkpoint: every object is looked at and skipped, nothing written.
        write_config(config, info, bucket=bucket, kms_key=new_key, sse_c_file=sse_c_file,
                     checkpoint=base / "rekey-second.sqlite")
        print(f"\n$ rekey run -c {config} --report {base / 'report-second.json'}   # again, fresh checkpoint")
        code2 = run_command(str(config), str(base / "report-second.json"), True)
        second = json.loads((base / "report-second.json").read_text())
        by_action = second["summary"]["by_action"]
        actions = ", ".join(f"{name} {n['objects']}" for name, n in sorted(by_action.items()))
        wrote = "nothing was written" if set(by_action) == {"skip"} else "some objects were written again"
        print(f"second run: {actions or 'no objects'} (exit {code2}); {wrote}")
        ok = (code == 0 and code2 == 0 and after == Counter({"sse-kms": len(seeds)})
              and set(by_action) == {"skip"})
        print("\ndemo " + ("succeeded: every object is SSE-KMS under the new key, second run wrote nothing"
                           if ok else "FAILED"))
        print(f"files kept in {base}")
        return 0 if ok else 1
