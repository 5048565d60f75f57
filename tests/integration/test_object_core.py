"""Issue 11 on SeaweedFS: one object core; instruction files travel with their object; nothing lost.

Each test reproduces a finding of the issue as a user meets it and asserts what the user reads back: bytes,
envelopes the official S3EC client decrypts, HeadObject, report and checkpoint rows, exit codes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from engine.sandbox import SandboxInfo, create_kms_key
from tests.cli_helpers import (
    MiB,
    checkpoint_rows,
    kill_when_held,
    list_keys,
    load_report,
    popen_rekey,
    report_by_key,
    run_rekey,
    small_run_section,
    source_section,
    write_config,
)
from tests.faultproxy import FaultProxy, Rule
from tests.integration.test_cse_acceptance import official

KMS: dict[str, Any] = {}


def config(info: SandboxInfo, tmp: Path, name: str, bucket: str, target: Mapping[str, Any], *,
           endpoint: str | None = None, destination: Mapping[str, Any] | None = None,
           source: Mapping[str, Any] | None = None, **run: Any) -> Path:
    src = source_section(info, bucket, https=False, **(source or {}))
    if endpoint is not None:
        src["endpoint_url"] = endpoint
    sections: dict[str, Mapping[str, Any]] = {"source": src}
    if destination is not None:
        sections["destination"] = destination
    sections.update({"target": target, "kms": {"endpoint_url": info.kms_url, "region": info.region},
                     "run": small_run_section(tmp / f"{name}.sqlite", **run)})
    return write_config(tmp, sections, name=f"{name}.toml")


def rekey(info: SandboxInfo, cfg: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    report = cfg.with_suffix(".json")
    result = run_rekey(info, "run", "-q", "-c", str(cfg), "--report", str(report), *args)
    return result.returncode, load_report(report) if report.exists() else {}, result.describe()


def cse(key_id: str, fmt: str, instruction_file: bool) -> dict[str, Any]:
    return {"mode": "cse", "keyring": "kms", "kms_key_id": key_id, "format": fmt, "instruction_file": instruction_file}


def seed_v2_with_instruction_files(info: SandboxInfo, s3: Any, tmp: Path, bucket: str, key_id: str,
                                   bodies: Mapping[str, bytes]) -> None:
    """Objects in format V2 whose envelope is in `<key>.instruction` (their own metadata holds no S3EC key)."""
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"owner": "qa"})
    code, _, out = rekey(info, config(info, tmp, "seed", bucket, cse(key_id, "v2", True)))
    assert code == 0, out
    assert list_keys(s3, bucket) == sorted([*bodies, *(k + ".instruction" for k in bodies)])
    for key in bodies:
        assert "x-amz-key-v2" not in s3.head_object(Bucket=bucket, Key=key)["Metadata"]


def readable(info: SandboxInfo, bucket: str, key_id: str, bodies: Mapping[str, bytes]) -> None:
    reader = official(info, key_id, allow_v2=True)
    for key, body in bodies.items():
        try:
            got = reader.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # the official client's own reason, shown as the failure
            pytest.fail(f"{key}: the official client cannot decrypt it: {exc}")
        assert got == body, key


def deny_instruction_files(s3: Any, bucket: str) -> None:
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "no-instruction-files", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*.instruction"}]}))


BODIES = {"a.txt": b"first object " * 50, "b.bin": os.urandom(3000), "empty": b""}


# --- in place, V2 with instruction files -> V3 with instruction files: nothing lost ------------------------------

def test_instruction_file_refused_after_the_data_write(sandbox: SandboxInfo, s3_http: Any, bucket: str,
                                                       kms_key: str, tmp_path: Path) -> None:
    seed_v2_with_instruction_files(sandbox, s3_http, tmp_path, bucket, kms_key, BODIES)
    deny_instruction_files(s3_http, bucket)
    cfg = config(sandbox, tmp_path, "v3", bucket, cse(kms_key, "v3", True))
    code, rep, out = rekey(sandbox, cfg)
    assert code == 1, out
    rows = report_by_key(rep)
    assert set(rows) == set(BODIES), "instruction files are part of their object, never objects of their own"
    for row in rows.values():
        assert (row["state"], row["action"], row["source_mode"]) == ("failed", "stream", "cse"), row
        assert "instruction file refused" in row["error"] and "stays readable" in row["error"], row
    # Every object decrypts right away: its new envelope went into its own metadata.
    readable(sandbox, bucket, kms_key, BODIES)
    assert checkpoint_rows(tmp_path / "v3.sqlite", "SELECT key FROM envelopes") == []

    s3_http.delete_bucket_policy(Bucket=bucket)
    code, rep, out = rekey(sandbox, cfg)
    assert code == 0, out
    rows = report_by_key(rep)
    assert {(r["state"], r["action"]) for r in rows.values()} == {("done", "rewrap")}, rows
    readable(sandbox, bucket, kms_key, BODIES)
    for key in BODIES:
        meta = s3_http.head_object(Bucket=bucket, Key=key)["Metadata"]
        assert "x-amz-3" not in meta and {"x-amz-c", "x-amz-d", "x-amz-i"} <= set(meta), meta
        file = json.loads(s3_http.get_object(Bucket=bucket, Key=key + ".instruction")["Body"].read())
        assert "x-amz-3" in file, file


def test_sigkill_between_the_data_and_its_instruction_file(sandbox: SandboxInfo, s3_http: Any, bucket: str,
                                                           kms_key: str, tmp_path: Path) -> None:
    seed_v2_with_instruction_files(sandbox, s3_http, tmp_path, bucket, kms_key, BODIES)
    # The first instruction file PUT is held; the run is killed while it waits, its data already replaced.
    hold = Rule("stall", methods=frozenset({"PUT"}), path_regex=r"\.instruction$", limit=1, seconds=60)
    with FaultProxy(sandbox.s3_http, [hold]) as proxy:
        cfg = config(sandbox, tmp_path, "kill", bucket, cse(kms_key, "v3", True), endpoint=proxy.url, concurrency=1)
        kill_when_held(popen_rekey(sandbox, "run", "-q", "-c", str(cfg)), proxy, seconds=60,
                       what="instruction file write")
        pending = checkpoint_rows(tmp_path / "kill.sqlite", "SELECT key, instruction FROM envelopes")
        assert len(pending) == 1, "the new envelope of the object being written is in the checkpoint"
        key = pending[0]["key"]
        envelope = json.loads(pending[0]["instruction"])
        assert "x-amz-3" in envelope and set(envelope) <= {"x-amz-3", "x-amz-w", "x-amz-t", "x-amz-m"}, envelope
        assert s3_http.head_object(Bucket=bucket, Key=key)["Metadata"].get("x-amz-c") == "115", \
            "killed before the data write: the test proves nothing"

        code, rep, out = rekey(sandbox, cfg)
    assert code == 0, out
    rows = report_by_key(rep)
    assert set(rows) == set(BODIES)
    assert {r["state"] for r in rows.values()} == {"done"}, rows
    assert rows[key]["source_mode"] == "cse"
    readable(sandbox, bucket, kms_key, BODIES)
    assert checkpoint_rows(tmp_path / "kill.sqlite", "SELECT key FROM envelopes") == []


# --- bucket to bucket: the pair moves, is decrypted, or is refused with the reason -------------------------------

def test_bucket_to_bucket_moves_the_pair_or_decrypts_or_refuses(sandbox: SandboxInfo, s3_http: Any,
                                                                bucket_factory: Any, kms_key: str,
                                                                tmp_path: Path) -> None:
    src = bucket_factory("src")
    seed_v2_with_instruction_files(sandbox, s3_http, tmp_path, src, kms_key, BODIES)
    refused, plain, moved = bucket_factory("dst"), bucket_factory("dst"), bucket_factory("dst")

    code, rep, out = rekey(sandbox, config(sandbox, tmp_path, "refuse", src, {"mode": "sse-s3"},
                                           destination={"bucket": refused}))
    assert code == 0, out
    rows = report_by_key(rep)
    assert set(rows) == set(BODIES)
    for row in rows.values():
        assert (row["state"], row["action"], row["source_mode"]) == ("skipped", "refuse", "cse"), row
        assert "allow_client_side_decrypt" in row["error"]
    assert list_keys(s3_http, refused) == []

    code, rep, out = rekey(sandbox, config(sandbox, tmp_path, "decrypt", src,
                                           {"mode": "sse-s3", "allow_client_side_decrypt": True},
                                           destination={"bucket": plain}))
    assert code == 0, out
    assert {(r["state"], r["action"]) for r in report_by_key(rep).values()} == {("done", "stream")}
    assert rep["summary"]["objects"] == len(BODIES)
    assert list_keys(s3_http, plain) == sorted(BODIES)
    for key, body in BODIES.items():
        got = s3_http.get_object(Bucket=plain, Key=key)
        assert got["Body"].read() == body and got["ServerSideEncryption"] == "AES256"

    other = create_kms_key(sandbox, "core b2b")
    code, rep, out = rekey(sandbox, config(sandbox, tmp_path, "move", src, cse(other, "v3", True),
                                           destination={"bucket": moved}))
    assert code == 0, out
    assert {r["state"] for r in report_by_key(rep).values()} == {"done"}
    assert list_keys(s3_http, moved) == sorted([*BODIES, *(k + ".instruction" for k in BODIES)])
    readable(sandbox, moved, other, BODIES)
    readable(sandbox, src, kms_key, BODIES)   # the source pairs are untouched


# --- route identity -------------------------------------------------------------------------------------------

def test_the_same_bucket_spelled_with_a_trailing_slash_is_in_place(sandbox: SandboxInfo, s3_http: Any,
                                                                   bucket: str, tmp_path: Path) -> None:
    s3_http.put_object(Bucket=bucket, Key="done", Body=b"x", ServerSideEncryption="AES256")
    s3_http.put_object(Bucket=bucket, Key="plain", Body=b"y")
    s3_http.put_object(Bucket=bucket, Key="dir/", Body=b"")   # a key ending in /: SeaweedFS keeps it as a directory
    cfg = config(sandbox, tmp_path, "slash", bucket, {"mode": "sse-s3"},
                 destination={"bucket": bucket, "endpoint_url": sandbox.s3_http + "/", "region": sandbox.region})
    code, rep, out = rekey(sandbox, cfg)
    assert code == 0, out
    rows = report_by_key(rep)
    assert (rows["done"]["action"], rows["done"]["state"]) == ("skip", "skipped"), rows   # in place: nothing to do
    assert (rows["plain"]["action"], rows["plain"]["state"]) == ("copy", "done")
    assert rep["run"]["capabilities"].get("if_match") is True   # in place: guarded writes, the server honours them
    assert s3_http.head_object(Bucket=bucket, Key="plain")["ServerSideEncryption"] == "AES256"
    assert rows["dir/"]["state"] == "skipped" and "directory marker" in rows["dir/"]["error"], rows["dir/"]
    assert list_keys(s3_http, bucket) == ["dir/", "done", "plain"]


# --- plan and run decide alike ---------------------------------------------------------------------------------

def plan(info: SandboxInfo, cfg: Path) -> dict[str, Any]:
    result = run_rekey(info, "plan", "--json", "-c", str(cfg))
    assert result.returncode == 0, result.describe()
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_plan_after_a_run_gives_the_next_runs_actions(sandbox: SandboxInfo, s3_http: Any, bucket: str,
                                                      kms_key: str, tmp_path: Path) -> None:
    key_a = create_kms_key(sandbox, "core plan A")
    for i in range(2):
        s3_http.put_object(Bucket=bucket, Key=f"old-{i}", Body=b"o" * 100, ServerSideEncryption="aws:kms",
                           SSEKMSKeyId=key_a)
    cfg = config(sandbox, tmp_path, "kms", bucket, {"mode": "sse-kms", "kms_key_id": kms_key})
    before = plan(sandbox, cfg)
    assert {d["action"] for d in before["decisions"]} == {"copy"}, "nothing learned yet: a copy is tried first"
    code, rep, out = rekey(sandbox, cfg)
    assert code == 0, out
    # SeaweedFS keeps key A on an SSE-KMS to SSE-KMS copy: the run learns it and streams.
    assert rep["run"]["capabilities"]["copy_applies_sse-kms_to_sse-kms"] is False

    new = {"new-kms": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_a}, "new-plain": {},
           "new-big": {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key_a}}
    for key, params in new.items():
        s3_http.put_object(Bucket=bucket, Key=key, Body=b"n" * (6 * MiB if key == "new-big" else 10), **params)
    priced = plan(sandbox, cfg)
    planned = {d["key"]: d["action"] for d in priced["decisions"]}
    assert planned["new-kms"] == "stream" and planned["new-big"] == "stream" and planned["new-plain"] == "copy"
    # Priced per action: a stream moves every byte through rekey twice (read, write); a copy none.
    rows = {(r["source_mode"], r["action"]): r for r in priced["plan"]}
    stream, copy = rows[("sse-kms", "stream")], rows[("none", "copy")]
    assert (stream["objects"], stream["bytes"]) == (2, 6 * MiB + 10)
    assert stream["bytes_through_rekey"] == 2 * stream["bytes"] and stream["kms_calls"] == 0
    assert stream["requests"] >= 2 * 4 and copy["requests"] >= 3 and copy["bytes_through_rekey"] == 0
    assert rows[("sse-kms", "skip")]["objects"] == 2   # the ones the first run did

    code, rep, out = rekey(sandbox, cfg)
    assert code == 0, out
    ran = {k: r["action"] for k, r in report_by_key(rep).items() if k in new}
    assert ran == {k: planned[k] for k in new}


def test_plan_takes_the_runs_objects_manifest_and_versions(sandbox: SandboxInfo, s3_http: Any,
                                                            bucket_factory: Any, tmp_path: Path) -> None:
    listed = bucket_factory("man")
    for key in ("in-1", "in-2", "out-1"):
        s3_http.put_object(Bucket=listed, Key=key, Body=b"m" * 10)
    manifest = tmp_path / "keys.txt"
    manifest.write_text("in-1\nin-2\n")
    data = plan(sandbox, config(sandbox, tmp_path, "man", listed, {"mode": "sse-s3"},
                                source={"manifest": str(manifest)}))
    assert sorted(d["key"] for d in data["decisions"]) == ["in-1", "in-2"] and data["objects"] == 2

    versioned = bucket_factory("ver")
    s3_http.put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
    for key in ("k1", "k2"):
        for i in range(3):
            s3_http.put_object(Bucket=versioned, Key=key, Body=f"v{i}".encode())
    cfg = config(sandbox, tmp_path, "ver", versioned, {"mode": "sse-s3"}, noncurrent="reencrypt")
    data = plan(sandbox, cfg)
    assert data["objects"] == 6 and {d["action"] for d in data["decisions"]} == {"recreate"}, data
    code, rep, out = rekey(sandbox, cfg)
    assert code == 0, out
    assert sum(1 for r in rep["objects"] if r["action"] == "recreate") == 6


# --- manifests --------------------------------------------------------------------------------------------------

def test_txt_manifest_sizes_from_head_and_missing_keys_fail(sandbox: SandboxInfo, s3_http: Any, bucket: str,
                                                            tmp_path: Path) -> None:
    s3_http.put_object(Bucket=bucket, Key="here", Body=b"h" * 1234)
    s3_http.put_object(Bucket=bucket, Key="dir/", Body=b"")
    manifest = tmp_path / "keys.txt"
    manifest.write_text("here\nnot-there\ndir/\n")
    cfg = config(sandbox, tmp_path, "txt", bucket, {"mode": "sse-s3"}, source={"manifest": str(manifest)})
    code, rep, out = rekey(sandbox, cfg)
    assert code == 1, out
    rows = report_by_key(rep)
    assert (rows["here"]["state"], rows["here"]["bytes"]) == ("done", 1234)
    assert rows["not-there"]["state"] == "failed" and "does not exist" in rows["not-there"]["error"]
    assert rows["not-there"]["action"] is None
    assert rows["dir/"]["state"] in ("done", "skipped") and "no longer exists" not in (rows["dir/"]["error"] or "")
    # The checkpoint holds the size HeadObject gave (a .txt manifest has none): verify agrees with the run.
    assert checkpoint_rows(tmp_path / "txt.sqlite", "SELECT size FROM objects WHERE key = 'here'")[0][0] == 1234
    # `here` verifies (its size was 0 before); the directory marker is named for what it is (the server keeps
    # no encryption on it); the missing key keeps the migration unverified.
    verify = run_rekey(sandbox, "verify", "-c", str(cfg))
    lines = verify.stdout.splitlines()
    assert [line for line in lines if line.startswith("mismatch:")] == [
        f"mismatch: s3://{bucket}/dir/: server reports none, wanted sse-s3"], verify.describe()
    assert "verified 2 done or skipped object(s): 1 mismatch(es)" in verify.stdout, verify.describe()
    assert "1 object(s) in scope are not done (failed 1)" in verify.stdout and verify.returncode == 1
    assert s3_http.head_object(Bucket=bucket, Key="here")["ServerSideEncryption"] == "AES256"


# --- truthful outcomes ------------------------------------------------------------------------------------------

def test_attempts_retries_and_actions_are_what_happened(sandbox: SandboxInfo, s3_http: Any, bucket: str,
                                                        tmp_path: Path) -> None:
    s3_http.put_object(Bucket=bucket, Key="sse-c", Body=b"c" * 10, SSECustomerAlgorithm="AES256",
                       SSECustomerKey=b"k" * 32)
    s3_http.put_object(Bucket=bucket, Key="slow", Body=b"s" * 10)
    once = Rule("slowdown", methods=frozenset({"PUT"}), path_regex=r"/slow$", limit=1)
    with FaultProxy(sandbox.s3_http, [once]) as proxy:
        cfg = config(sandbox, tmp_path, "truth", bucket, {"mode": "sse-s3"}, endpoint=proxy.url)
        for _ in range(2):
            code, rep, out = rekey(sandbox, cfg)
            assert code == 1, out
    rows = report_by_key(rep)
    assert rows["sse-c"]["state"] == "failed" and rows["sse-c"]["action"] != "skip"
    assert rows["sse-c"]["attempts"] == 2
    assert rows["slow"]["state"] == "done" and rows["slow"]["retries"] >= 1 and rows["slow"]["attempts"] == 1
    assert rep["run"]["objects_this_run"] == 1 and rep["run"]["objects_per_second"] > 0


def test_source_mode_survives_a_sigkill_after_the_write(sandbox: SandboxInfo, s3_http: Any, bucket: str,
                                                        tmp_path: Path) -> None:
    s3_http.put_object(Bucket=bucket, Key="obj", Body=b"p" * 100)
    # The second HEAD of the object is the check after the copy: held, and the run killed while it waits.
    hold = Rule("stall", methods=frozenset({"HEAD"}), path_regex=r"/obj$", after=1, limit=1, seconds=60)
    with FaultProxy(sandbox.s3_http, [hold]) as proxy:
        cfg = config(sandbox, tmp_path, "mode", bucket, {"mode": "sse-s3"}, endpoint=proxy.url, copy_first=False)
        kill_when_held(popen_rekey(sandbox, "run", "-q", "-c", str(cfg)), proxy, seconds=60, what="check HEAD")
        assert s3_http.head_object(Bucket=bucket, Key="obj")["ServerSideEncryption"] == "AES256"
        code, rep, out = rekey(sandbox, cfg)
    assert code == 0, out
    row = report_by_key(rep)["obj"]
    assert row["source_mode"] == "none", row


def test_after_a_rewrap_with_instruction_files_verify_plan_and_report_count_pairs_once(
        sandbox: SandboxInfo, s3_http: Any, bucket: str, kms_key: str, tmp_path: Path) -> None:
    for key, body in BODIES.items():
        s3_http.put_object(Bucket=bucket, Key=key, Body=body)
    code, _, out = rekey(sandbox, config(sandbox, tmp_path, "v3a", bucket, cse(kms_key, "v3", True)))
    assert code == 0, out
    key_b = create_kms_key(sandbox, "core rewrap B")
    cfg = config(sandbox, tmp_path, "v3b", bucket, cse(key_b, "v3", True))
    code, rep, out = rekey(sandbox, cfg)
    assert code == 0, out
    rows = report_by_key(rep)
    assert set(rows) == set(BODIES) and {(r["state"], r["action"]) for r in rows.values()} == {("done", "rewrap")}
    assert rep["summary"]["objects"] == len(BODIES) and rep["summary"]["bytes_through_client"] == 0
    verify = run_rekey(sandbox, "verify", "--deep", "-c", str(cfg))
    assert verify.returncode == 0, verify.describe()
    assert f"verified {len(BODIES)} done or skipped object(s) (deep): 0 mismatch(es)" in verify.stdout, \
        verify.describe()
    planned = plan(sandbox, cfg)
    assert sorted(d["key"] for d in planned["decisions"]) == sorted(BODIES)
    assert {d["action"] for d in planned["decisions"]} == {"skip"}, planned["decisions"]
    readable(sandbox, bucket, key_b, BODIES)


def test_a_client_side_write_in_place_is_journaled_before_its_check(sandbox: SandboxInfo, s3_http: Any,
                                                                     bucket: str, kms_key: str,
                                                                     tmp_path: Path) -> None:
    body = b"plain text, to be client-side encrypted in place " * 20
    source_etag = s3_http.put_object(Bucket=bucket, Key="obj", Body=body)["ETag"].strip('"')
    # The second HEAD of the object is the check after the encrypted PUT: held, and the run killed then.
    hold = Rule("stall", methods=frozenset({"HEAD"}), path_regex=r"/obj$", after=1, limit=1, seconds=60)
    with FaultProxy(sandbox.s3_http, [hold]) as proxy:
        cfg = config(sandbox, tmp_path, "csejournal", bucket, cse(kms_key, "v3", False), endpoint=proxy.url)
        kill_when_held(popen_rekey(sandbox, "run", "-q", "-c", str(cfg)), proxy, seconds=60, what="check HEAD")
        ours = s3_http.head_object(Bucket=bucket, Key="obj")["ETag"].strip('"')
        assert ours != source_etag   # the encrypted object is in; its outcome is not recorded
        query = "SELECT etag, new_etag FROM objects WHERE key = 'obj'"
        assert [tuple(str(v).strip('"') for v in row) for row in checkpoint_rows(tmp_path / "csejournal.sqlite",
                                                                                  query)] == [(source_etag, ours)]
        code, rep, out = rekey(sandbox, cfg)
    assert code == 0, out
    assert report_by_key(rep)["obj"]["state"] in ("done", "skipped"), rep
    # The resumed run took the object as rekey's own write: the source's ETag stays the proof.
    [(etag,)] = checkpoint_rows(tmp_path / "csejournal.sqlite", "SELECT etag FROM objects WHERE key = 'obj'")
    assert str(etag).strip('"') == source_etag
    readable(sandbox, bucket, kms_key, {"obj": body})
