"""A flaky, throttling or vanishing endpoint: rekey slows down, retries, waits, or stops with a clear message.

Every test here runs the real CLI in a child process against SeaweedFS, through the fault proxy when faults
are injected.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from engine.sandbox import Sandbox, SandboxInfo
from tests.faultproxy import FaultProxy, Rule
from tests.integration.reliability_helpers import (
    MiB,
    count_done,
    open_uploads,
    run_rekey,
    start_rekey,
    states,
    write_config,
)

BIG = 12 * MiB


def seed(s3: Any, bucket: str, *, small: int, big: int, prefix: str = "obj/") -> dict[str, bytes]:
    """`small` objects of 1-4 KiB and `big` 12 MiB ones (multipart at 5 MiB parts), all unencrypted."""
    bodies = {f"{prefix}{i:05d}": os.urandom(1024 + (i * 37) % 3072) for i in range(small)}
    bodies.update({f"{prefix}big-{i}": os.urandom(BIG) for i in range(big)})
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), bodies.items()))
    return bodies


def assert_all_sse_s3(s3: Any, bucket: str, bodies: dict[str, bytes]) -> None:
    def check(item: tuple[str, bytes]) -> str | None:
        key, body = item
        resp = s3.get_object(Bucket=bucket, Key=key)
        data = resp["Body"].read()
        if resp.get("ServerSideEncryption") != "AES256":
            return f"{key}: encryption {resp.get('ServerSideEncryption')}"
        if hashlib.sha256(data).digest() != hashlib.sha256(body).digest():
            return f"{key}: bytes differ"
        return None

    with ThreadPoolExecutor(16) as pool:
        wrong = [w for w in pool.map(check, bodies.items()) if w]
    assert wrong == [], wrong[:10]


def config_for(tmp_path: Path, bucket: str, endpoint: str, **run: Any) -> Path:
    return write_config(tmp_path / "rekey.toml", {
        "source": {"bucket": bucket, "prefix": "obj/", "endpoint_url": endpoint},
        "target": {"mode": "sse-s3"},
        "run": {"checkpoint": str(tmp_path / "rekey.sqlite"), "part_size": "5MiB",
                "multipart_threshold": "5MiB", **run},
    })


@pytest.fixture
def proxy(sandbox: SandboxInfo) -> Iterator[FaultProxy]:
    with FaultProxy(sandbox.s3_http, [], seed=1234) as p:
        yield p


def test_throttling_and_resets_slow_rekey_down_but_every_object_ends_right(
        s3_http: Any, bucket: str, proxy: FaultProxy, tmp_path: Path) -> None:
    bodies = seed(s3_http, bucket, small=495, big=5)   # some 1,500 requests: 150 throttled, 30 reset
    proxy.set_rules([Rule("slowdown", rate=0.10), Rule("reset", rate=0.02)])
    config = config_for(tmp_path, bucket, proxy.url, concurrency=16)
    report = tmp_path / "report.json"

    started = time.monotonic()
    result = run_rekey("run", "-c", str(config), "--report", str(report), "-q")
    elapsed = time.monotonic() - started

    stats = proxy.statistics()
    assert result.code == 0, result.stdout + result.stderr
    run = json.loads(report.read_text())["run"]
    print(f"\nfaults: {elapsed:.1f}s, proxy {stats.requests} requests, injected {dict(stats.injected)}; "
          f"rekey retries {run['retries']}, throttles {run['throttles']}, "
          f"min concurrency {run['min_concurrency']}, requests {run['requests']}")
    assert stats.injected["slowdown"] > 100 and stats.injected["reset"] > 10
    assert run["retries"] > 0 and run["throttles"] > 0
    assert run["min_concurrency"] < 16  # AIMD came down on SlowDown
    assert states(tmp_path / "rekey.sqlite") == {"done": 500}
    assert_all_sse_s3(s3_http, bucket, bodies)
    assert open_uploads(s3_http, bucket) == []


def test_seaweedfs_restarted_mid_run_then_the_next_run_completes(
        s3_http: Any, bucket: str, sandbox: SandboxInfo, sandbox_handle: Sandbox, tmp_path: Path) -> None:
    bodies = seed(s3_http, bucket, small=600, big=2)
    config = config_for(tmp_path, bucket, sandbox.s3_http, concurrency=8, max_requests_per_second=300)
    checkpoint = tmp_path / "rekey.sqlite"

    child = start_rekey("run", "-c", str(config), "-q")
    deadline = time.monotonic() + 60
    while count_done(checkpoint) < 50 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, "the run ended before SeaweedFS could be stopped: seed more objects"
    sandbox_handle.stop_s3()
    time.sleep(2)
    sandbox_handle.start_s3()
    out, err = child.communicate(timeout=180)

    # Either it waited for the endpoint and finished, or it stopped cleanly with a message saying why.
    print(f"\nrestart: first run exit {child.returncode}; {states(checkpoint)}")
    assert child.returncode in (0, 3), out + err
    if child.returncode == 3:
        assert "endpoint unreachable" in err, err
        assert "Traceback" not in err
    again = run_rekey("run", "-c", str(config), "-q")
    assert again.code == 0, again.stdout + again.stderr
    assert states(checkpoint) == {"done": len(bodies)}
    assert_all_sse_s3(s3_http, bucket, bodies)
    assert open_uploads(s3_http, bucket) == []


@pytest.mark.parametrize("which", ["unknown access key", "wrong secret"])
def test_refused_credentials_stop_the_run_with_exit_3_instead_of_failing_every_object(
        s3_http: Any, bucket: str, sandbox: SandboxInfo, tmp_path: Path, which: str) -> None:
    seed(s3_http, bucket, small=20, big=0)
    config = config_for(tmp_path, bucket, sandbox.s3_http)
    env = ({"AWS_ACCESS_KEY_ID": "RKEXPIRED0000000000"} if which == "unknown access key"
           else {"AWS_SECRET_ACCESS_KEY": "not-the-secret-" + "x" * 24})

    result = run_rekey("run", "-c", str(config), "-q", env=env)

    assert result.code == 3, result.stdout + result.stderr
    # HeadBucket's 403 has no body; rekey asks once more with a body to name the real cause.
    expected = {"unknown access key": "InvalidAccessKeyId (The access key ID you provided does not exist in "
                                      "our records.)",
                "wrong secret": "SignatureDoesNotMatch (The request signature we calculated does not match the "
                                "signature you provided. Check your key and signing method.)"}[which]
    assert result.stderr == f"rekey: error: list_objects_v2 s3://{bucket}: credentials refused: {expected}\n"
    assert "Traceback" not in result.stderr
    assert states(tmp_path / "rekey.sqlite").get("failed", 0) == 0
    assert env[next(iter(env))] not in result.stdout + result.stderr


def test_a_short_listing_is_fetched_once_not_again_after_the_range_probe(
        s3_http: Any, bucket: str, proxy: FaultProxy, tmp_path: Path) -> None:
    """The probe that decides whether to split the listing reads the first pages; the pass reuses them."""
    bodies = seed(s3_http, bucket, small=1500, big=0)   # two pages of ListObjectsV2
    # a zero delay fires on every listing of the bucket: the proxy counts them
    proxy.set_rules([Rule("delay", seconds=0.0, methods=frozenset({"GET"}), path_regex=rf"^/{bucket}/?$",
                          query_contains="list-type=2")])
    report = tmp_path / "report.json"
    result = run_rekey("run", "-c", str(config_for(tmp_path, bucket, proxy.url)), "--report", str(report), "-q")
    assert result.code == 0, result.stdout + result.stderr
    assert states(tmp_path / "rekey.sqlite") == {"done": 1500}
    assert_all_sse_s3(s3_http, bucket, bodies)
    # 2 pages, each listed once (an in-place run lists no destination)
    assert proxy.statistics().injected["delay"] == 2
