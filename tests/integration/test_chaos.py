"""Chaos: one run over 500+ objects SIGKILLed five times at random moments, resumed each time, ends exactly right.

The run is in place to SSE-KMS key B. Plain sources are re-encrypted server-side (CopyObject, UploadPartCopy
for the 12 MiB ones); SSE-KMS key A sources are streamed, because SeaweedFS's copy keeps the old KMS key
and refuses UploadPartCopy from SSE-KMS (rekey learns both and streams those objects).

Parts uploaded again are counted at the fault proxy, which rekey talks to: after each kill, every part the
checkpoint had recorded as finished (upload id, part number) gets a zero-second `delay` rule matching exactly
that UploadPart/UploadPartCopy request, so `injected["delay"]` counts recorded parts sent a second time (it must
stay 0); a catch-all zero-second `stall` rule counts every other part request. A part whose upload finished on
the server but was not yet journaled when the kill came is legitimately sent again: "finished" means recorded.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from engine.sandbox import SandboxInfo, create_kms_key
from tests.faultproxy import FaultProxy, Rule
from tests.integration.reliability_helpers import (
    MiB,
    checkpoint_query,
    open_uploads,
    run_rekey,
    start_rekey,
    states,
    write_config,
)

KILLS = 5
PART_METHODS = frozenset({"PUT"})


def part_rule(upload_id: str, part_number: int) -> Rule:
    return Rule("delay", seconds=0.0, methods=PART_METHODS,
                query_contains=f"partNumber={part_number}&uploadId={quote(upload_id, safe='-_.~')}")


@pytest.mark.slow
def test_five_sigkills_then_resume_leaves_every_object_right_and_no_part_sent_twice(
        s3_http: Any, bucket: str, sandbox: SandboxInfo, kms_key: str, tmp_path: Path) -> None:
    key_a, key_b = create_kms_key(sandbox, "chaos source"), kms_key
    kms_a = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_a}
    objects: dict[str, tuple[bytes, dict[str, Any]]] = {}
    for i in range(3):
        objects[f"big-plain-{i}"] = (os.urandom(12 * MiB), {})
        objects[f"big-kms-{i}"] = (os.urandom(12 * MiB), kms_a)
    for i in range(440):
        objects[f"obj-plain-{i:04d}"] = (os.urandom(512 + i * 13), {})
    for i in range(60):
        objects[f"obj-kms-{i:04d}"] = (os.urandom(512 + i * 29), kms_a)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3_http.put_object(Bucket=bucket, Key=kv[0], Body=kv[1][0], **kv[1][1]),
                      objects.items()))

    checkpoint = tmp_path / "rekey.sqlite"
    rng = random.Random(20240607)
    with FaultProxy(sandbox.s3_http, seed=5) as proxy:
        counter = Rule("stall", seconds=0.3, methods=PART_METHODS, query_contains="partNumber=")
        proxy.set_rules([counter])
        config = write_config(tmp_path / "rekey.toml", {
            "source": {"bucket": bucket, "endpoint_url": proxy.url},
            "target": {"mode": "sse-kms", "kms_key_id": key_b},
            "run": {"checkpoint": str(checkpoint), "concurrency": 8, "part_size": "5MiB",
                    "multipart_threshold": "5MiB", "max_requests_per_second": 120},
        })
        recorded: set[tuple[str, int]] = set()
        started = time.monotonic()
        for kill in range(KILLS):
            child = start_rekey("run", "-c", str(config), "-q")
            time.sleep(rng.uniform(0.8, 2.5))
            assert child.poll() is None, f"run {kill + 1} ended before its kill: {child.communicate()}"
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
            parts = checkpoint_query(checkpoint, "SELECT upload_id, part_number FROM parts")
            recorded |= {(str(u), int(n)) for u, n in parts}
            print(f"\nkill {kill + 1}: {states(checkpoint)}, {len(parts)} parts recorded, "
                  f"{len(open_uploads(s3_http, bucket))} uploads open")
            proxy.set_rules([*(part_rule(u, n) for u, n in sorted(recorded)), counter])

        final = run_rekey("run", "-c", str(config), "-q")
        stats = proxy.statistics()
        print(f"chaos: {time.monotonic() - started:.1f}s to the end; {len(recorded)} parts recorded at kills; "
              f"part requests after the first kill: {stats.injected['stall'] + stats.injected['delay']}; "
              f"recorded parts sent again: {stats.injected['delay']}")
        assert final.code == 0, final.stdout + final.stderr
        assert stats.injected["delay"] == 0, "a part recorded as finished was uploaded again"

        verified = run_rekey("verify", "-c", str(config), "--deep", "--report", str(tmp_path / "verify.json"))
        assert verified.code == 0, verified.stdout + verified.stderr
        assert f"verified {len(objects)} done or skipped object(s) (deep): 0 mismatch(es); md5 {len(objects)}" \
            in verified.stdout

        # An upload created just before a kill, before its id was journaled, is found through the intent
        # journaled before CreateMultipartUpload and aborted by the resume: none may be left.
        orphans = [u for u in open_uploads(s3_http, bucket)]
        assert orphans == [], orphans
        foreign = s3_http.create_multipart_upload(Bucket=bucket, Key="someone-elses-upload")["UploadId"]
        cleaned = run_rekey("cleanup", "-c", str(config))
        assert cleaned.code == 0, cleaned.stderr
        assert f"{len(orphans) + 1} other incomplete upload(s) there left alone" in cleaned.stdout
        assert foreign in [u["UploadId"] for u in open_uploads(s3_http, bucket)]
        s3_http.abort_multipart_upload(Bucket=bucket, Key="someone-elses-upload", UploadId=foreign)

    assert sum(states(checkpoint).values()) == len(objects)
    assert set(states(checkpoint)) <= {"done", "skipped"}  # skipped: already right when a resume saw it
    assert checkpoint_query(checkpoint, "SELECT COUNT(*) FROM uploads") == [(0,)]

    def check(item: tuple[str, tuple[bytes, dict[str, Any]]]) -> str | None:
        key, (body, _) = item
        resp = s3_http.get_object(Bucket=bucket, Key=key)
        if resp.get("ServerSideEncryption") != "aws:kms" or not str(resp.get("SSEKMSKeyId")).endswith(key_b):
            return f"{key}: {resp.get('ServerSideEncryption')} {resp.get('SSEKMSKeyId')}"
        if hashlib.sha256(resp["Body"].read()).digest() != hashlib.sha256(body).digest():
            return f"{key}: bytes differ"
        return None

    with ThreadPoolExecutor(16) as pool:
        wrong = [w for w in pool.map(check, objects.items()) if w]
    assert wrong == [], wrong[:10]
    assert open_uploads(s3_http, bucket) == []
