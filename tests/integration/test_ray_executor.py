"""`[run] executor = "ray"` against SeaweedFS on a 3-node Ray cluster on this machine (ray.cluster_utils).

The issue's acceptance at its size: 2,000 objects of mixed sources (plaintext, SSE-S3, a few SSE-C, client-side
AES and multipart) re-encrypted in place to SSE-KMS by 3 actors on 3 nodes; a node killed mid-run; the driver
SIGKILLed mid-run and run again. Every object is checked as a user would: bytes read back, SSE-KMS with the
configured key, metadata, tags; no multipart upload left behind. The cluster is shared by the module (start-up
costs seconds).

Kept quick on 2 shared cores: each test seeds its own bucket (in place, the run changes it), the plain objects
are PUT and read back over signed raw HTTP (RawS3: about half of boto3's client CPU per request), and only a
few objects are SSE-C, client-side or multipart.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import pytest
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from ray.cluster_utils import Cluster

from engine.sandbox import SandboxInfo, create_kms_key
from tests.cli_helpers import (
    MiB,
    checkpoint_rows,
    kill_when_held,
    load_report,
    open_uploads,
    popen_rekey,
    report_by_key,
    run_rekey,
    small_run_section,
    source_section,
    write_config,
    write_key_file,
)
from tests.faultproxy import FaultProxy, Rule
from tests.helpers import sse_c_params
from tests.integration.test_object_core import BODIES as ENVELOPE_BODIES
from tests.integration.test_object_core import cse, readable, seed_v2_with_instruction_files

NODES = 3
OBJECTS = 2000            # the acceptance size, per test
CSE_OBJECTS, SSE_C_OBJECTS, MULTIPART_OBJECTS = 8, 16, 2   # the rest plaintext or SSE-S3, up to 2 KiB
CHECK_THREADS = 16
FAST_FAILURE_DETECTION = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                          "health_check_timeout_ms": 500, "health_check_failure_threshold": 2}
# Ray runs its workers 15 nice levels down; on 2 cores shared with other work that starves the actors
CLUSTER_CONFIG = {**FAST_FAILURE_DETECTION, "worker_niceness": 0}


@pytest.fixture(scope="module")
def cluster(sandbox: SandboxInfo) -> Iterator[Cluster]:
    """Three Ray nodes of one CPU each (one actor per node); they inherit the sandbox's credentials."""
    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 1, "include_dashboard": False,
                                "_system_config": CLUSTER_CONFIG})
    for _ in range(NODES - 1):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        c.shutdown()


def ensure_nodes(c: Cluster) -> None:
    """Back to NODES live nodes (a test may have killed one)."""
    alive = c.list_all_nodes()   # remove_node takes a killed node off this list
    for _ in range(NODES - len(alive)):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()


class RawS3:
    """GET, GET ?tagging and PUT signed by botocore's SigV4 and sent over one urllib3 pool: about half of a
    boto3 call's client CPU, so thousands of objects are seeded and read back quickly on 2 shared cores.
    Plain HTTP (SSE-C objects are written with boto3 over HTTPS)."""

    def __init__(self, info: SandboxInfo) -> None:
        self._base = info.s3_http
        self._signer = S3SigV4Auth(Credentials(info.access_key, info.secret_key), "s3", info.region)
        self._pool = urllib3.PoolManager(maxsize=CHECK_THREADS, retries=False)

    def send(self, method: str, bucket: str, key: str, *, query: str = "", body: bytes = b"",
             headers: Mapping[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        url = f"{self._base}/{bucket}/{quote(key)}" + (f"?{query}" if query else "")
        request = AWSRequest(method, url, data=body, headers=dict(headers or {}))
        self._signer.add_auth(request)
        response = self._pool.request(method, url, body=body or None, headers=dict(request.headers.items()))
        assert response.status == 200, f"{method} {key}: HTTP {response.status} {response.data[:200]!r}"
        return response

    def tags(self, bucket: str, key: str) -> dict[str, str]:
        root = ElementTree.fromstring(self.send("GET", bucket, key, query="tagging").data)
        ns = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
        return {t.findtext(f"{ns}Key") or "": t.findtext(f"{ns}Value") or "" for t in root.iter(f"{ns}Tag")}


class Seeded:
    """What each object must read back as after the run."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.sse_c_key = os.urandom(32)


Spec = tuple[str, bytes, dict[str, Any]]   # key, body, extra PUT arguments (raw headers or boto3 keywords)


def mixed_specs(seeded: Seeded) -> tuple[list[Spec], list[Spec]]:
    """OBJECTS keys: (plain and SSE-S3 ones, PUT raw), (SSE-C, multipart and soon client-side ones, by boto3)."""
    special: list[Spec] = []
    for i in range(CSE_OBJECTS):
        special.append((f"c/{i:02d}", os.urandom(700 + i), {}))
    for i in range(SSE_C_OBJECTS):
        special.append((f"s/{i:02d}", os.urandom(900 + i), sse_c_params(seeded.sse_c_key)))
    for i in range(MULTIPART_OBJECTS):
        special.append((f"m/{i}", os.urandom(6 * MiB + i), {}))   # multipart (5 MiB parts, 5 MiB threshold)
    plain = [(f"p/{i:04d}", os.urandom(i * 53 % 2048), {"x-amz-server-side-encryption": "AES256"} if i % 3 == 1 else {})
             for i in range(OBJECTS - len(special))]
    return plain, special


def seed(info: SandboxInfo, s3: Any, bucket: str, tmp: Path) -> Seeded:
    """OBJECTS objects: plaintext and SSE-S3, a few SSE-C and multipart, then a prefix turned client-side by a
    local run. Every one with metadata, a content type and a tag."""
    seeded = Seeded()
    plain, special = mixed_specs(seeded)
    raw = RawS3(info)

    def put_raw(spec: Spec) -> None:
        key, body, extra = spec
        raw.send("PUT", bucket, key, body=body, headers={"Content-Type": "application/x-test", "x-amz-meta-owner": "qa",
                                                         "x-amz-tagging": "team=storage", **extra})

    def put(spec: Spec) -> None:
        key, body, extra = spec
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"owner": "qa"}, Tagging="team=storage",
                      ContentType="application/x-test", **extra)

    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        list(pool.map(put, special))
        list(pool.map(put_raw, plain))
    seeded.bodies = {key: body for key, body, _ in [*plain, *special]}
    aes = write_key_file(tmp, "cse.key", os.urandom(32))
    write_key_file(tmp, "sse-c.key", seeded.sse_c_key)
    to_cse = write_config(tmp, {"source": source_section(info, bucket, prefix="c/"),
                                "target": {"mode": "cse", "keyring": "aes", "key_file": str(aes)},
                                "run": small_run_section(tmp / "seed.sqlite")}, "seed.toml")
    made = run_rekey(info, "run", "-q", "-c", str(to_cse))
    assert made.returncode == 0, made.describe()
    assert all("x-amz-3" in s3.head_object(Bucket=bucket, Key=f"c/{i:02d}")["Metadata"] for i in range(CSE_OBJECTS))
    return seeded


def ray_config(info: SandboxInfo, c: Cluster, bucket: str, tmp: Path, kms_key: str, **run: Any) -> Path:
    return write_config(tmp, {
        "source": source_section(info, bucket, sse_c_key_file=str(tmp / "sse-c.key")),
        "source.cse": {"aes_key_files": [str(tmp / "cse.key")]},
        "target": {"mode": "sse-kms", "kms_key_id": kms_key, "allow_client_side_decrypt": True},
        "kms": {"endpoint_url": info.kms_url, "region": info.region},
        "run": small_run_section(tmp / "ray.sqlite", executor="ray", concurrency=16, **run),
        "ray": {"address": c.address, "actors": NODES},
    }, "ray.toml")


def assert_every_object_right(info: SandboxInfo, s3: Any, bucket: str, seeded: Seeded, kms_key: str) -> None:
    """Every object as a user reads it back: its bytes, SSE-KMS under `kms_key`, its metadata and content type
    (no S3EC keys left), its tag; and no multipart upload open in the bucket."""
    raw = RawS3(info)

    def check(key: str) -> str | None:
        got = raw.send("GET", bucket, key)
        head, body = got.headers, got.data
        problems = []
        if body != seeded.bodies[key]:
            problems.append(f"bytes differ ({len(body)} read, {len(seeded.bodies[key])} seeded)")
        mode = head.get("x-amz-server-side-encryption")
        used = head.get("x-amz-server-side-encryption-aws-kms-key-id", "")
        if mode != "aws:kms" or kms_key not in used:
            problems.append(f"encryption {mode} {used}")
        meta = {k.lower(): v for k, v in head.items() if k.lower().startswith("x-amz-meta-")}
        if meta != {"x-amz-meta-owner": "qa"} or head.get("Content-Type") != "application/x-test":
            problems.append(f"metadata {meta} {head.get('Content-Type')}")
        if (tags := raw.tags(bucket, key)) != {"team": "storage"}:
            problems.append(f"tags {tags}")
        return f"{key}: {'; '.join(problems)}" if problems else None

    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        wrong = [p for p in pool.map(check, sorted(seeded.bodies)) if p]
    assert not wrong, f"{len(wrong)} of {len(seeded.bodies)} objects wrong:\n" + "\n".join(wrong[:20])
    assert open_uploads(s3, bucket) == []


def empty_quickly(s3: Any, bucket: str) -> None:
    """Delete the objects 1,000 a request (the bucket fixture deletes one at a time: slow for 2,000)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        if page.get("Contents"):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": o["Key"]} for o in page["Contents"]],
                                                     "Quiet": True})


def wait_for_lines(path: Path, count: int, proc: Any, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_bytes().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path}: not {count} lines in time (exit {proc.poll()})")


def test_three_actors_on_three_nodes_every_object_right(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                        tmp_path: Path, cluster: Cluster) -> None:
    ensure_nodes(cluster)
    kms_key = create_kms_key(sandbox)
    seeded = seed(sandbox, s3, bucket, tmp_path)
    config = ray_config(sandbox, cluster, bucket, tmp_path, kms_key)
    report = tmp_path / "report.json"
    done = run_rekey(sandbox, "run", "-q", "-c", str(config), "--report", str(report), timeout=300)
    assert done.returncode == 0, done.describe()
    assert_every_object_right(sandbox, s3, bucket, seeded, kms_key)
    rep = load_report(report)
    assert rep["executor"] == {"kind": "ray", "actors": NODES, "actors_lost": 0}
    run = rep["run"]   # the actors' requests are counted per transport too, not only the driver's
    assert sum(run["requests_by_transport"].values()) == run["requests"], run
    assert run["requests_by_transport"]["fast"] >= 2 * len(seeded.bodies), run
    actors = {o["actor"] for o in rep["objects"]}
    assert len({a.split("@")[1] for a in actors}) == NODES, actors   # 3 actors on 3 nodes did the work
    assert {o["state"] for o in rep["objects"]} == {"done"}
    by_action = {o["key"][0]: o["action"] for o in rep["objects"]}
    assert by_action["m"] in ("multipart-copy", "stream") and by_action["c"] == "stream"
    # the key material stayed on the nodes: nothing of it in the checkpoint, the report or Ray's logs
    logs = [p for p in Path(cluster.head_node.get_session_dir_path()).rglob("*") if p.is_file()]
    assert any("worker" in p.name for p in logs)   # the actors' own logs are among them
    for secret in (seeded.sse_c_key, (tmp_path / "cse.key").read_bytes()):
        for path in [tmp_path / "ray.sqlite", report, *logs]:
            data = path.read_bytes()
            assert secret not in data and secret.hex().encode() not in data, path
            assert base64.b64encode(secret) not in data, path
    empty_quickly(s3, bucket)


def test_a_node_killed_mid_run_still_every_object_right(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                        tmp_path: Path, cluster: Cluster) -> None:
    ensure_nodes(cluster)
    kms_key = create_kms_key(sandbox)
    seeded = seed(sandbox, s3, bucket, tmp_path)
    config = ray_config(sandbox, cluster, bucket, tmp_path, kms_key)
    lines, report = tmp_path / "done.jsonl", tmp_path / "report.json"
    proc = popen_rekey(sandbox, "run", "-q", "-c", str(config), "--completion-report", str(lines),
                       "--report", str(report))
    wait_for_lines(lines, OBJECTS // 10, proc)
    victim = next(n for n in cluster.list_all_nodes() if not n.head)
    cluster.remove_node(victim, allow_graceful=False)
    assert len(lines.read_bytes().splitlines()) < OBJECTS, "the node was killed after the run's end"
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode() + err.decode()
    assert_every_object_right(sandbox, s3, bucket, seeded, kms_key)
    rep = load_report(report)
    ex = rep["executor"]
    assert ex["actors_lost"] == 1 and ex["actors"] == NODES and ex["batches_retried"] >= 1, ex
    assert {o["state"] for o in rep["objects"]} <= {"done", "skipped"}   # skipped: done, then its actor lost
    finished = [json.loads(line) for line in lines.read_text().splitlines()]
    assert {e["key"] for e in finished} == set(seeded.bodies)
    assert checkpoint_rows(tmp_path / "ray.sqlite", "SELECT * FROM uploads") == []
    empty_quickly(s3, bucket)


def test_driver_sigkilled_mid_run_then_resumed(sandbox: SandboxInfo, s3: Any, bucket: str, tmp_path: Path,
                                               cluster: Cluster) -> None:
    ensure_nodes(cluster)
    kms_key = create_kms_key(sandbox)
    seeded = seed(sandbox, s3, bucket, tmp_path)
    config = ray_config(sandbox, cluster, bucket, tmp_path, kms_key)
    lines = tmp_path / "done.jsonl"
    proc = popen_rekey(sandbox, "run", "-q", "-c", str(config), "--completion-report", str(lines))
    wait_for_lines(lines, OBJECTS // 10, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    pending = checkpoint_rows(tmp_path / "ray.sqlite", "SELECT COUNT(*) FROM objects WHERE state != 'done'")
    assert pending[0][0] > OBJECTS // 4, "the driver was killed mid-run, not near its end"
    again = run_rekey(sandbox, "run", "-q", "-c", str(config), "--report", str(tmp_path / "r.json"), timeout=300)
    assert again.returncode == 0, again.describe()
    assert_every_object_right(sandbox, s3, bucket, seeded, kms_key)
    assert checkpoint_rows(tmp_path / "ray.sqlite", "SELECT * FROM uploads") == []
    states = load_report(tmp_path / "r.json")["summary"]["by_state"]
    assert set(states) <= {"done", "skipped"} and sum(states.values()) == len(seeded.bodies), states
    empty_quickly(s3, bucket)


def test_bench_on_the_cluster_runs_every_actor_at_once_and_sums(sandbox: SandboxInfo, bucket: str,
                                                                 cluster: Cluster) -> None:
    ensure_nodes(cluster)
    out = run_rekey(sandbox, "bench", "--executor", "ray", "--ray-address", cluster.address, "--actors", "3",
                    "--endpoint-url", sandbox.s3_http, "--region", sandbox.region, "--bucket", bucket,
                    "--modes", "none,sse-s3", "--count", "4", "--size", "1KiB", "--concurrency", "2", "--json",
                    timeout=300)
    assert out.returncode == 0, out.describe()
    data = json.loads(out.stdout)
    assert data["executor"] == {"kind": "ray", "actors": 3}
    assert len(data["actors"]) == 3 and len({a["actor"].split("@")[1] for a in data["actors"]}) == NODES
    for mode in data["modes"]:
        assert {p["op"]: p["ok"] for p in mode["phases"]} == {"PUT": 12, "GET": 12, "COPY": 12}, mode
        per = [next(m for m in a["modes"] if m["mode"] == mode["mode"]) for a in data["actors"]]
        assert mode["phases"][0]["objects_per_s"] == pytest.approx(sum(m["phases"][0]["objects_per_s"] for m in per))
    assert data["modes"][1]["applied"] is True
    assert open_uploads_or_objects(sandbox, bucket) == []


def open_uploads_or_objects(sandbox: SandboxInfo, bucket: str) -> list[str]:
    """Scratch objects the benchmark left (it deletes them all)."""
    from tests.helpers import s3_client
    client = s3_client(sandbox)
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_driver_killed_between_the_data_and_its_instruction_file(sandbox: SandboxInfo, s3_http: Any, bucket: str,
                                                                 kms_key: str, tmp_path: Path,
                                                                 cluster: Cluster) -> None:
    """In place, V2 with instruction files to V3 with instruction files on Ray: the driver is SIGKILLed while an
    actor's instruction file PUT is held (its data already replaced); the next Ray run puts the file from the
    envelope the checkpoint kept, as a local run does, and every object decrypts with the official client."""
    ensure_nodes(cluster)
    seed_v2_with_instruction_files(sandbox, s3_http, tmp_path, bucket, kms_key, ENVELOPE_BODIES)
    hold = Rule("stall", methods=frozenset({"PUT"}), path_regex=r"\.instruction$", limit=1, seconds=240)
    with FaultProxy(sandbox.s3_http, [hold]) as proxy:
        src = source_section(sandbox, bucket, https=False)
        src["endpoint_url"] = proxy.url
        cfg = write_config(tmp_path, {
            "source": src, "target": cse(kms_key, "v3", True),
            "kms": {"endpoint_url": sandbox.kms_url, "region": sandbox.region},
            "run": small_run_section(tmp_path / "env.sqlite", executor="ray", concurrency=1),
            "ray": {"address": cluster.address, "actors": NODES}}, "env.toml")
        kill_when_held(popen_rekey(sandbox, "run", "-q", "-c", str(cfg)), proxy, seconds=120,
                       what="instruction file write")
        # Several objects are in flight on 3 actors: each journaled its envelope through the driver before its
        # data write; the one whose instruction file is held has its new data in place already.
        pending = [r["key"] for r in checkpoint_rows(tmp_path / "env.sqlite", "SELECT key FROM envelopes")]
        replaced = [k for k in pending if s3_http.head_object(Bucket=bucket, Key=k)["Metadata"].get("x-amz-c") == "115"]
        assert replaced, f"no data written under a pending envelope ({pending}): the test proves nothing"

        again = run_rekey(sandbox, "run", "-q", "-c", str(cfg), "--report", str(tmp_path / "env.json"), timeout=300)
    assert again.returncode == 0, again.describe()
    rows = report_by_key(load_report(tmp_path / "env.json"))
    assert set(rows) == set(ENVELOPE_BODIES) and {r["state"] for r in rows.values()} == {"done"}, rows
    readable(sandbox, bucket, kms_key, ENVELOPE_BODIES)
    assert checkpoint_rows(tmp_path / "env.sqlite", "SELECT key FROM envelopes") == []
