"""`rekey bench` against SeaweedFS: every mode's PUT/GET/COPY measured, what the endpoint really applied
reported, scratch objects gone afterwards."""

from __future__ import annotations

import json
from typing import Any

from engine.sandbox import SandboxInfo
from tests.cli_helpers import run_rekey


def bench(sandbox: SandboxInfo, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_rekey(sandbox, "bench", "--count", "6", "--concurrency", "3", "--size", "20KiB", "--json", *args)
    assert result.stdout.strip(), result.describe()
    return result.returncode, json.loads(result.stdout)


def test_bench_measures_each_mode_and_cleans_up(sandbox: SandboxInfo, s3: Any, bucket: str, kms_key: str) -> None:
    code, out = bench(sandbox, "--endpoint-url", sandbox.s3_http, "--bucket", bucket, "--region", sandbox.region,
                      "--modes", "none,sse-s3,sse-kms,cse", "--kms-key-id", kms_key,
                      "--kms-endpoint-url", sandbox.kms_url)
    assert code == 0, out
    modes = {m["mode"]: m for m in out["modes"]}
    assert sorted(modes) == ["cse", "none", "sse-kms", "sse-s3"]
    for name, m in modes.items():
        assert m["applied"] is True, (name, m)
        assert [(p["op"], p["ok"], p["failed"]) for p in m["phases"]] == [
            ("PUT", 6, 0), ("GET", 6, 0), ("COPY", 6, 0)], (name, m)
        assert all(p["objects_per_s"] > 0 and p["p50_ms"] is not None for p in m["phases"]), (name, m)
    assert "KMS keyring" in modes["cse"]["note"]
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0, "scratch objects were left behind"


def test_bench_reports_a_mode_the_endpoint_does_not_apply(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                          kms_key: str) -> None:
    """Over HTTPS: SSE-C measured; DSSE-KMS accepted by SeaweedFS but stored as plaintext: exit 1."""
    code, out = bench(sandbox, "--endpoint-url", sandbox.s3_https, "--ca-bundle", sandbox.ca_bundle,
                      "--bucket", bucket, "--region", sandbox.region, "--modes", "sse-c,dsse-kms,cse",
                      "--kms-key-id", kms_key)
    assert code == 1, out
    modes = {m["mode"]: m for m in out["modes"]}
    assert modes["sse-c"]["applied"] is True and modes["sse-c"]["phases"][1]["ok"] == 6, modes["sse-c"]
    assert modes["dsse-kms"]["applied"] is False, modes["dsse-kms"]
    assert modes["cse"]["applied"] is True and "local AES keyring" in modes["cse"]["note"], modes["cse"]
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0, "scratch objects were left behind"
