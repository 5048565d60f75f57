"""Versioned buckets on SeaweedFS: version groups, and each `[run] noncurrent` setting on keys with 3 versions.

The functional tests call `engine.versions.version_groups` and `workers.versions.migrate_versions` directly
(a Job on the sandbox); the CLI tests at the end state the intended `rekey run` behaviour once the pipeline
uses them (`noncurrent` in the config, `--confirm-delete-noncurrent`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from engine.listing import KeyFilter
from engine.sandbox import SandboxInfo
from engine.versions import version_groups
from tests.cli_helpers import load_report, run_rekey, source_section, write_config
from workers.capabilities import Capabilities, LocalCapabilities
from workers.errors import ObjectChangedError
from workers.job import Hooks, Job
from workers.model import Action, Encryption, Location, Mode, ObjectHead, ObjectRef, Outcome, State
from workers.s3 import S3, Endpoint
from workers.versions import CONFIRM_REASON, MARKER, REPORT_REASON, migrate_versions, plan_history, recreate_version

T = TypeVar("T")
SSE_S3 = Encryption(Mode.SSE_S3)
BODIES = [b"first version", b"second version!", b"third and current version"]


def Caps(**values: bool) -> LocalCapabilities:
    """In-memory capabilities, in the form the checkpoint keeps them."""
    return LocalCapabilities(Capabilities.from_flags(values))




def with_job(info: SandboxInfo, bucket: str, fn: Callable[[Job], Awaitable[T]],
             target: Encryption = SSE_S3, caps: LocalCapabilities | None = None) -> T:
    async def main() -> T:
        async with S3.open(Endpoint(endpoint_url=info.s3_http, region=info.region)) as s3:
            job = Job.of(source=s3, dest=s3, src=Location(bucket), dst=Location(bucket), in_place=True,
                      same_endpoint=True, target=target, hooks=Hooks(caps=caps or Caps()))
            return await fn(job)
    return anyio.run(main)


def seed(s3: Any, bucket: str, keys: list[str]) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key in keys:
        for i, body in enumerate(BODIES):
            s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"n": str(i)}, ContentType="text/plain")


def stack(s3: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """Every version of `key`, oldest first, with its body and HeadObject."""
    listed = s3.list_object_versions(Bucket=bucket, Prefix=key)
    out = []
    for v in reversed([v for v in listed.get("Versions", []) if v["Key"] == key]):
        head = s3.head_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])
        body = s3.get_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])["Body"].read()
        out.append({"vid": v["VersionId"], "latest": v["IsLatest"], "body": body,
                    "sse": head.get("ServerSideEncryption"), "meta": head["Metadata"], "type": head["ContentType"]})
    return out


def groups_of(info: SandboxInfo, bucket: str, **kw: Any) -> list[tuple[list[list[ObjectRef]], str, bool]]:
    async def collect(job: Job) -> list[tuple[list[list[ObjectRef]], str, bool]]:
        return [p async for p in version_groups(job.source, bucket, KeyFilter("", (), ()), **kw)]
    return with_job(info, bucket, collect)


def run_group(info: SandboxInfo, bucket: str, key: str, noncurrent: str, **kw: Any) -> list[Outcome]:
    async def main(job: Job) -> list[Outcome]:
        async for groups, _, _ in version_groups(job.source, bucket, KeyFilter(key, (), ())):
            for group in groups:
                if group[0].key == key:
                    return await migrate_versions(job, group, noncurrent, **kw)
        raise AssertionError(f"{key} not listed")
    return with_job(info, bucket, main)


# --- listing -----------------------------------------------------------------------------------------------


def test_groups_never_split_a_key_and_list_oldest_first(sandbox: SandboxInfo, s3_http: Any, bucket: str) -> None:
    seed(s3_http, bucket, ["a", "b", "c"])
    s3_http.delete_object(Bucket=bucket, Key="b")  # latest of b is now a delete marker
    pages = groups_of(info=sandbox, bucket=bucket, page_size=2)   # 2 per page: every key is cut by S3
    groups = [g for gs, _, _ in pages for g in gs]
    assert [(g[0].key, len(g)) for g in groups] == [("a", 3), ("b", 3), ("c", 3)]
    assert pages[-1][1:] == ("c", True) and all(not last for _, _, last in pages[:-1])
    a = groups[0]
    bodies = [s3_http.get_object(Bucket=bucket, Key="a", VersionId=r.version_id)["Body"].read() for r in a]
    assert bodies == BODIES
    assert [r.is_latest for r in a] == [False, False, True]
    assert not any(r.is_latest for r in groups[1])   # deleted key: no current version
    resumed = [g[0].key for gs, _, _ in groups_of(info=sandbox, bucket=bucket, start_after="a") for g in gs]
    assert resumed == ["b", "c"]


# --- each noncurrent setting ----------------------------------------------------------------------------------


def test_keep_reencrypts_only_the_current_version(sandbox: SandboxInfo, s3_http: Any, bucket: str) -> None:
    seed(s3_http, bucket, ["k"])
    outcomes = run_group(sandbox, bucket, "k", "keep")
    assert [(o.state, o.action) for o in outcomes] == [(State.DONE, Action.COPY)]
    after = stack(s3_http, bucket, "k")
    assert [v["body"] for v in after] == [*BODIES, BODIES[2]]
    assert [v["sse"] for v in after] == [None, None, None, "AES256"]


def test_report_names_each_noncurrent_version_and_its_mode(sandbox: SandboxInfo, s3_http: Any, bucket: str) -> None:
    seed(s3_http, bucket, ["k"])
    vids = [v["vid"] for v in stack(s3_http, bucket, "k")]
    outcomes = run_group(sandbox, bucket, "k", "report")
    current, *old = outcomes
    assert current.state == State.DONE and current.version_id == vids[2]
    assert [(o.version_id, o.state, o.source_mode, o.error) for o in old] == [
        (vids[0], State.SKIPPED, Mode.NONE, REPORT_REASON), (vids[1], State.SKIPPED, Mode.NONE, REPORT_REASON)]
    assert [v["sse"] for v in stack(s3_http, bucket, "k")][:3] == [None, None, None]


def test_reencrypt_recreates_the_history_in_order_and_is_idempotent(sandbox: SandboxInfo, s3_http: Any,
                                                                    bucket: str) -> None:
    seed(s3_http, bucket, ["dir/k"])
    vids = [v["vid"] for v in stack(s3_http, bucket, "dir/k")]
    outcomes = run_group(sandbox, bucket, "dir/k", "reencrypt")
    assert [(o.version_id, o.state, o.action) for o in outcomes] == [(v, State.DONE, Action.RECREATE) for v in vids]
    after = stack(s3_http, bucket, "dir/k")
    assert [v["body"] for v in after] == BODIES + BODIES          # old ones kept, copies on top, in order
    assert [v["sse"] for v in after] == [None] * 3 + ["AES256"] * 3
    assert after[-1]["latest"] and after[-1]["body"] == BODIES[2]
    assert [v["meta"] for v in after[3:]] == [{"n": str(i), MARKER: vids[i]} for i in range(3)]
    assert {v["type"] for v in after} == {"text/plain"}
    assert [o.new_version_id for o in outcomes] == [v["vid"] for v in after[3:]]
    # a second pass finds every version done: nothing new is written
    again = run_group(sandbox, bucket, "dir/k", "reencrypt")
    assert len(stack(s3_http, bucket, "dir/k")) == 6
    assert all(o.state == State.SKIPPED for o in again[3:])


def test_reencrypt_resumes_after_a_crash_without_recreating_twice(sandbox: SandboxInfo, s3_http: Any,
                                                                  bucket: str) -> None:
    seed(s3_http, bucket, ["k"])

    async def crash_after_first_copy(job: Job) -> None:
        async for groups, _, _ in version_groups(job.source, bucket, KeyFilter("", (), ())):
            first = groups[0][0]
            head = await job.source.head(bucket, "k", version_id=first.version_id)
            top = await job.source.head(bucket, "k")
            await recreate_version(job, first, head, expect_top=top.etag)   # then the process "dies"
    with_job(sandbox, bucket, crash_after_first_copy)
    assert [v["body"] for v in stack(s3_http, bucket, "k")] == [*BODIES, BODIES[0]]
    outcomes = run_group(sandbox, bucket, "k", "reencrypt")
    after = stack(s3_http, bucket, "k")
    assert [v["body"] for v in after] == BODIES + BODIES           # not BODIES + [first, first, ...]
    assert [o.state for o in outcomes[:3]] == [State.DONE] * 3
    assert outcomes[0].bytes_copied == 0 and outcomes[1].bytes_copied == len(BODIES[1])


def test_delete_needs_confirmation_then_removes_old_versions_after_verifying(
        sandbox: SandboxInfo, s3_http: Any, bucket: str) -> None:
    seed(s3_http, bucket, ["k"])
    refused = run_group(sandbox, bucket, "k", "delete")
    assert {(o.state, o.action, o.error) for o in refused} == {(State.FAILED, Action.REFUSE, CONFIRM_REASON)}
    assert len(stack(s3_http, bucket, "k")) == 3                     # nothing changed
    outcomes = run_group(sandbox, bucket, "k", "delete", confirmed=True)
    assert {(o.state, o.action) for o in outcomes} == {(State.DONE, Action.RECREATE_DELETE)}
    after = stack(s3_http, bucket, "k")
    assert [(v["body"], v["sse"]) for v in after] == [(b, "AES256") for b in BODIES]
    assert after[-1]["latest"]
    assert run_group(sandbox, bucket, "k", "delete", confirmed=True)[0].state == State.SKIPPED


def test_deleted_key_versions_are_left_alone(sandbox: SandboxInfo, s3_http: Any, bucket: str) -> None:
    seed(s3_http, bucket, ["k"])
    s3_http.delete_object(Bucket=bucket, Key="k")
    outcomes = run_group(sandbox, bucket, "k", "reencrypt")
    assert len(outcomes) == 3 and all(o.state == State.SKIPPED and "delete marker" in (o.error or "")
                                      for o in outcomes)
    assert len(stack(s3_http, bucket, "k")) == 3


def test_a_write_by_someone_else_is_never_buried(sandbox: SandboxInfo, s3_http: Any, bucket: str) -> None:
    seed(s3_http, bucket, ["k"])

    async def copy_with_stale_top(job: Job) -> None:
        first = (await job.source.list_versions(bucket)).versions[-1]
        ref = ObjectRef("k", 0, "", version_id=first.version_id, is_latest=False)
        head = await job.source.head(bucket, "k", version_id=ref.version_id)
        s3_http.put_object(Bucket=bucket, Key="k", Body=b"someone else's write")
        await recreate_version(job, ref, head, expect_top='"etag-seen-before-that-write"')
    with pytest.raises(ObjectChangedError):
        with_job(sandbox, bucket, copy_with_stale_top)
    assert s3_http.get_object(Bucket=bucket, Key="k")["Body"].read() == b"someone else's write"


@pytest.mark.parametrize("copy_applies", [None, False])
def test_sse_kms_key_a_to_key_b(sandbox: SandboxInfo, s3_http: Any, bucket: str, kms_key: str,
                                copy_applies: bool | None) -> None:
    """SSE-KMS key A versions to key B, by CopyObject (SeaweedFS applies key B when copying from a
    VersionId), or by GET + PUT once the endpoint is known not to apply it (as learned in place)."""
    from engine.sandbox import create_kms_key
    key_a = create_kms_key(sandbox, "versions A")
    s3_http.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in BODIES:
        s3_http.put_object(Bucket=bucket, Key="k", Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId=key_a)
    target = Encryption(Mode.SSE_KMS, kms_key_id=kms_key)

    async def main(job: Job) -> list[Outcome]:
        async for groups, _, _ in version_groups(job.source, bucket, KeyFilter("", (), ())):
            return await migrate_versions(job, groups[0], "delete", confirmed=True)
        raise AssertionError
    caps = Caps(**({"copy_applies_sse-kms_to_sse-kms": False} if copy_applies is False else {}))
    outcomes = with_job(sandbox, bucket, main, target=target, caps=caps)
    assert {o.state for o in outcomes} == {State.DONE}, outcomes
    after = s3_http.list_object_versions(Bucket=bucket)["Versions"]
    assert len(after) == 3
    for v in after:
        head = s3_http.head_object(Bucket=bucket, Key="k", VersionId=v["VersionId"])
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith(kms_key)
    assert [o.bytes_copied for o in outcomes] == ([0, 0, 0] if copy_applies is False else [13, 15, 25])


# --- pure planning --------------------------------------------------------------------------------------------


def _pair(vid: str, mode: Mode, src: str | None = None) -> tuple[ObjectRef, ObjectHead]:
    meta = {MARKER: src} if src else {}
    return ObjectRef("k", 1, vid, vid), ObjectHead("k", 1, vid, Encryption(mode), vid, metadata=meta)


def _job() -> Job:
    return Job.of(source=None, dest=None, src=Location("b"), dst=Location("b"), in_place=True,  # type: ignore[arg-type]
               same_endpoint=True, target=SSE_S3)


@pytest.mark.parametrize(("stack_", "todo", "made"), [
    ([("1", Mode.NONE, None), ("2", Mode.NONE, None), ("3", Mode.NONE, None)], ["1", "2", "3"], []),
    # later versions already in the target are re-created too, to keep the order
    ([("1", Mode.SSE_S3, None), ("2", Mode.NONE, None), ("3", Mode.SSE_S3, None)], ["2", "3"], []),
    ([("1", Mode.SSE_S3, None), ("2", Mode.SSE_S3, None)], [], []),
    # a crash after two copies: continue with the third
    ([("1", Mode.NONE, None), ("2", Mode.NONE, None), ("3", Mode.NONE, None), ("1b", Mode.SSE_S3, "1"),
      ("2b", Mode.SSE_S3, "2")], ["1", "2", "3"], ["1", "2"]),
    # someone wrote on top of our copies: re-create everything again rather than guess
    ([("1", Mode.NONE, None), ("1b", Mode.SSE_S3, "1"), ("x", Mode.NONE, None)], ["1", "1b", "x"], []),
    # delete crashed half way: the sources left still count as done
    ([("3", Mode.NONE, None), ("1b", Mode.SSE_S3, "1"), ("2b", Mode.SSE_S3, "2"), ("3b", Mode.SSE_S3, "3")],
     ["3"], ["3"]),
])
def test_plan_history(stack_: list[tuple[str, Mode, str | None]], todo: list[str], made: list[str]) -> None:
    planned, copies = plan_history([_pair(*v) for v in stack_], _job())
    assert [r.version_id for r, _ in planned] == todo
    assert sorted(copies) == made


# --- the CLI, once the pipeline is wired ----------------------------------------------------------------------


def _cli(sandbox: SandboxInfo, bucket: str, tmp_path: Path, noncurrent: str, *args: str) -> tuple[int, Any]:
    cfg = write_config(tmp_path, {
        "source": source_section(sandbox, bucket, https=False),
        "target": {"mode": "sse-s3"},
        "run": {"checkpoint": str(tmp_path / "cp.sqlite"), "noncurrent": noncurrent},
    })
    report = tmp_path / "report.json"
    result = run_rekey(sandbox, "run", "-c", str(cfg), "--report", str(report), "-q", *args)
    return result.returncode, (load_report(report) if report.exists() else result.describe())


@pytest.mark.parametrize("noncurrent", ["keep", "report", "reencrypt"])
def test_cli_noncurrent_settings(sandbox: SandboxInfo, s3_http: Any, bucket: str, tmp_path: Path,
                                 noncurrent: str) -> None:
    seed(s3_http, bucket, ["a", "b"])
    code, report = _cli(sandbox, bucket, tmp_path, noncurrent)
    assert code == 0, report
    for key in ("a", "b"):
        after = stack(s3_http, bucket, key)
        assert after[-1]["latest"] and after[-1]["body"] == BODIES[2] and after[-1]["sse"] == "AES256"
        if noncurrent == "reencrypt":
            assert [v["body"] for v in after] == BODIES + BODIES and after[3]["sse"] == "AES256"
        else:
            assert len(after) == 4 and [v["sse"] for v in after[:3]] == [None, None, None]
    rows = [o for o in report["objects"] if o.get("error") == REPORT_REASON]
    assert len(rows) == (4 if noncurrent == "report" else 0)
    code, _ = _cli(sandbox, bucket, tmp_path, noncurrent)      # a second run changes nothing
    assert code == 0 and len(stack(s3_http, bucket, "a")) == (6 if noncurrent == "reencrypt" else 4)


def test_cli_delete_needs_the_confirmation_flag(sandbox: SandboxInfo, s3_http: Any, bucket: str,
                                                tmp_path: Path) -> None:
    seed(s3_http, bucket, ["a"])
    code, _ = _cli(sandbox, bucket, tmp_path, "delete")
    assert code != 0 and len(stack(s3_http, bucket, "a")) == 3
    code, report = _cli(sandbox, bucket, tmp_path, "delete", "--confirm-delete-noncurrent")
    assert code == 0, report
    assert [(v["body"], v["sse"]) for v in stack(s3_http, bucket, "a")] == [(b, "AES256") for b in BODIES]
