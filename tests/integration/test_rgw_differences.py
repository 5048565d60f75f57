"""What Ceph RGW 16.2 does differently (shared/reference/ceph-rgw.md), one test per difference, each asserting
what rekey makes of it: the object migrated right by another route, or the run refused before any write.

One in-place run (module fixture) over a bucket that meets every copy difference at once: small and multipart
objects, plaintext, SSE-KMS and SSE-C, tagged, one multipart key with `%`; target SSE-KMS key B. The refusals
are each their own short run. Which route an object took is read from the report; what rekey learned about
the server from the report's capabilities (persisted in the checkpoint).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.sandbox_rgw import RgwInfo
from tests.cli_helpers import (
    CliResult,
    MiB,
    head,
    list_keys,
    load_report,
    open_uploads,
    report_by_key,
    run_rekey,
    small_run_section,
    source_section,
    tags_of,
    write_config,
    write_key_file,
)
from tests.helpers import read_back, sse_c_params
from workers.capabilities import Capabilities, LocalCapabilities
from workers.errors import ObjectChangedError
from workers.job import Hooks, Job
from workers.model import Encryption, Location, Mode, ObjectHead, ObjectRef
from workers.s3 import S3, Endpoint
from workers.stream import CAP_IF_MATCH_UNQUOTED, stream_copy

SMALL, MULTIPART = 2048 + 5, 5 * MiB + 777


class Caps(LocalCapabilities):
    """A capability record (the engine's is persisted in the checkpoint), seen in its stored form."""

    def __init__(self, **values: bool) -> None:
        super().__init__(Capabilities.from_flags(values))

    @property
    def values(self) -> dict[str, bool]:
        return self.current.to_flags()


@dataclass(frozen=True)
class Obj:
    key: str
    mode: str
    body: bytes = field(repr=False)
    tags: dict[str, str]
    metadata: dict[str, str]


@dataclass(frozen=True)
class Migrated:
    """The module's one in-place run: seeded objects, the run's result, report and capabilities."""

    bucket: str
    objects: dict[str, Obj]
    result: CliResult
    report: dict[str, Any]

    @property
    def caps(self) -> dict[str, bool]:
        caps: dict[str, bool] = self.report["run"]["capabilities"]
        return caps

    def entry(self, key: str) -> dict[str, Any]:
        return report_by_key(self.report)[key]


def params(mode: str, rgw: RgwInfo, sse_c_key: bytes) -> dict[str, Any]:
    if mode == "sse-kms":
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": rgw.kms_keys[0]}
    if mode == "sse-c":
        return sse_c_params(sse_c_key)
    return {}


SEEDS = [
    ("none-small", "none", SMALL),
    ("sse-kms-small", "sse-kms", SMALL),
    ("sse-c-small", "sse-c", SMALL),
    ("none-multipart", "none", MULTIPART),
    ("sse-kms-100%25-multipart", "sse-kms", MULTIPART),
    ("none-50%-off-multipart", "none", MULTIPART),
    ("sse-c-multipart", "sse-c", MULTIPART),
]


@pytest.fixture(scope="module")
def migrated(rgw: RgwInfo, rgw_s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrated]:
    d = tmp_path_factory.mktemp("rgw-differences")
    sse_c_key = os.urandom(32)
    bucket = "rgw-differences-" + os.urandom(6).hex()
    rgw_s3.create_bucket(Bucket=bucket)
    objects = {}
    for name, mode, size in SEEDS:
        obj = Obj(f"{name}.bin", mode, os.urandom(size), {"name": name.replace("%", "pct"), "team": "a"},
                  {"origin": name})
        rgw_s3.put_object(Bucket=bucket, Key=obj.key, Body=obj.body, Metadata=obj.metadata,
                          Tagging="&".join(f"{k}={v}" for k, v in obj.tags.items()),
                          **params(mode, rgw, sse_c_key))
        objects[obj.key] = obj
    config = write_config(d, {
        "source": source_section(rgw, bucket, sse_c_key_file=str(write_key_file(d, "a.key", sse_c_key))),
        "target": {"mode": "sse-kms", "kms_key_id": rgw.kms_keys[1]},
        "run": small_run_section(d / "cp.sqlite"),
    })
    result = run_rekey(rgw, "run", "-q", "-c", str(config), "--report", str(d / "report.json"))
    yield Migrated(bucket, objects, result, load_report(d / "report.json"))


def assert_migrated(rgw: RgwInfo, s3: Any, m: Migrated, key: str) -> None:
    """Done, under SSE-KMS key B, same bytes, same tags and user metadata."""
    obj = m.objects[key]
    assert m.entry(key)["state"] == "done", m.entry(key)
    h = head(s3, m.bucket, key)
    assert (h.get("ServerSideEncryption"), h.get("SSEKMSKeyId")) == ("aws:kms", rgw.kms_keys[1]), key
    assert hashlib.sha256(read_back(s3, m.bucket, key)).digest() == hashlib.sha256(obj.body).digest(), key
    assert tags_of(s3, m.bucket, key) == obj.tags, key
    assert h.get("Metadata") == obj.metadata, key


def test_the_run_migrates_every_object(rgw: RgwInfo, rgw_s3: Any, migrated: Migrated) -> None:
    assert migrated.result.returncode == 0, migrated.result.describe()
    assert migrated.report["summary"]["by_state"] == {"done": len(SEEDS)}
    assert list_keys(rgw_s3, migrated.bucket) == sorted(migrated.objects)
    assert open_uploads(rgw_s3, migrated.bucket) == []


def test_copy_that_ignores_the_target_encryption_is_streamed(rgw: RgwInfo, rgw_s3: Any, migrated: Migrated) -> None:
    """CopyObject answers 200 and stores plaintext: caught by the check after the write, streamed instead."""
    assert migrated.caps.get("copy_applies_none_to_sse-kms") is False, migrated.caps
    assert migrated.entry("none-small.bin")["action"] == "stream"
    assert_migrated(rgw, rgw_s3, migrated, "none-small.bin")


def test_copy_from_encrypted_sources_501_falls_back_to_a_stream(rgw: RgwInfo, rgw_s3: Any,
                                                                 migrated: Migrated) -> None:
    assert migrated.caps.get("copy_object_from_sse-kms") is False or \
        migrated.caps.get("copy_object_from_sse-c") is False, migrated.caps
    for key in ("sse-kms-small.bin", "sse-c-small.bin"):
        assert migrated.entry(key)["action"] == "stream", migrated.entry(key)
        assert_migrated(rgw, rgw_s3, migrated, key)


def test_upload_part_copy_from_sse_c_refused_falls_back_to_a_stream(rgw: RgwInfo, rgw_s3: Any,
                                                                    migrated: Migrated) -> None:
    assert migrated.caps.get("upload_part_copy_from_sse-c") is False, migrated.caps
    assert migrated.entry("sse-c-multipart.bin")["action"] == "stream"
    assert_migrated(rgw, rgw_s3, migrated, "sse-c-multipart.bin")


def test_quoted_if_match_412_on_an_unchanged_object_uses_the_unquoted_form(rgw: RgwInfo, rgw_s3: Any,
                                                                           migrated: Migrated) -> None:
    """In place, every stream's final write carries If-Match; RGW matches only the unquoted ETag."""
    assert migrated.caps.get("if_match_unquoted") is True, migrated.caps
    assert not any(o["state"] == "changed" for o in migrated.report["objects"])
    assert_migrated(rgw, rgw_s3, migrated, "none-small.bin")


def test_in_place_copy_deleting_tags_loses_none(rgw: RgwInfo, rgw_s3: Any, migrated: Migrated) -> None:
    """The in-place CopyObject (REPLACE + tagging COPY) deletes the tags: they were read before it."""
    assert_migrated(rgw, rgw_s3, migrated, "none-small.bin")
    assert migrated.entry("none-small.bin")["action"] == "stream"


def test_tags_dropped_by_create_multipart_upload_are_written_after(rgw: RgwInfo, rgw_s3: Any,
                                                                  migrated: Migrated) -> None:
    dropped = {k: v for k, v in migrated.caps.items() if k.startswith("keeps_tags_") and "multipart" in k}
    assert dropped and not any(dropped.values()), migrated.caps
    for key in ("none-multipart.bin", "sse-kms-100%25-multipart.bin", "sse-c-multipart.bin",
                "none-50%-off-multipart.bin"):
        assert_migrated(rgw, rgw_s3, migrated, key)


def test_percent_key_upload_part_copy_cannot_find_takes_the_stream(rgw: RgwInfo, rgw_s3: Any,
                                                                   migrated: Migrated) -> None:
    assert migrated.caps.get("upload_part_copy_finds_percent_keys") is False, migrated.caps
    assert migrated.entry("sse-kms-100%25-multipart.bin")["action"] == "stream"
    assert_migrated(rgw, rgw_s3, migrated, "sse-kms-100%25-multipart.bin")


def test_malformed_percent_key_never_goes_to_upload_part_copy(rgw: RgwInfo, rgw_s3: Any,
                                                               migrated: Migrated) -> None:
    """Not in the reference, found here: UploadPartCopy of a key with `%` not followed by two hex digits
    aborts radosgw 16.2.15 (assertion in RGWObjectCtx::set_atomic). Such keys stream; the server lives."""
    assert migrated.entry("none-50%-off-multipart.bin")["action"] == "stream"
    assert_migrated(rgw, rgw_s3, migrated, "none-50%-off-multipart.bin")
    assert rgw_s3.list_buckets()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_report_names_the_calibrated_paths(migrated: Migrated) -> None:
    """Every path this run wrote on was read back before it was trusted; the report lists them."""
    calibrated = migrated.report["run"]["calibrated"]
    used = {f"{o['source_mode']}_to_sse-kms_{o['action']}_in-place" for o in migrated.report["objects"]}
    assert used <= set(calibrated), (used, calibrated)
    assert all(calibrated[p]["read_back"] >= 1 and calibrated[p]["trusted"] is not False for p in used), calibrated


def test_https_put_needs_no_content_length_workaround(rgw: RgwInfo, rgw_s3: Any, migrated: Migrated) -> None:
    """boto3 over HTTPS gets MissingContentLength unless checksums are sent only when required: rekey's
    own PutObjects (the streams above) went through."""
    streamed = [o for o in migrated.report["objects"] if o["action"] == "stream"]
    assert streamed and migrated.report["summary"]["bytes_through_client"] > 0
    for o in streamed:
        assert_migrated(rgw, rgw_s3, migrated, o["key"])


# --- refusals: each its own short run, nothing written ------------------------------------------------------


def refused_run(rgw: RgwInfo, s3: Any, bucket_factory: Callable[..., str], tmp_path: Path, target: dict[str, Any],
                *, https: bool = True) -> tuple[CliResult, str, dict[str, Any]]:
    """A bucket with a plaintext and an SSE-KMS object, one run to `target`; returns (result, bucket, before)."""
    bucket = bucket_factory("rgw-refused")
    s3.put_object(Bucket=bucket, Key="plain.bin", Body=b"p" * 3000, Tagging="t=1")
    s3.put_object(Bucket=bucket, Key="kms.bin", Body=b"k" * 3000, ServerSideEncryption="aws:kms",
                  SSEKMSKeyId=rgw.kms_keys[0])
    before = {k: head(s3, bucket, k) for k in ("plain.bin", "kms.bin")}
    time.sleep(1.1)  # LastModified has one-second resolution: any rewrite now shows
    config = write_config(tmp_path, {"source": source_section(rgw, bucket, https=https), "target": target,
                                     "run": small_run_section(tmp_path / "cp.sqlite")})
    return run_rekey(rgw, "run", "-q", "-c", str(config)), bucket, before


def assert_untouched(s3: Any, bucket: str, before: dict[str, Any], result: CliResult) -> None:
    assert result.returncode == 3, result.describe()
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.describe()
    for key, was in before.items():
        now = head(s3, bucket, key)
        assert (now["ETag"], now["LastModified"], now.get("ServerSideEncryption")) == \
            (was["ETag"], was["LastModified"], was.get("ServerSideEncryption")), key
    assert list_keys(s3, bucket) == sorted(before)


def test_sse_s3_stored_as_plaintext_is_refused(rgw: RgwInfo, rgw_s3: Any, rgw_bucket_factory: Callable[..., str],
                                               tmp_path: Path) -> None:
    result, bucket, before = refused_run(rgw, rgw_s3, rgw_bucket_factory, tmp_path, {"mode": "sse-s3"})
    assert_untouched(rgw_s3, bucket, before, result)
    assert "sse-s3" in result.stderr and "refus" in result.stderr


def test_dsse_kms_refused_by_the_server_is_refused(rgw: RgwInfo, rgw_s3: Any,
                                                   rgw_bucket_factory: Callable[..., str], tmp_path: Path) -> None:
    result, bucket, before = refused_run(rgw, rgw_s3, rgw_bucket_factory, tmp_path,
                                         {"mode": "dsse-kms", "kms_key_id": rgw.kms_keys[1]})
    assert_untouched(rgw_s3, bucket, before, result)
    assert "dsse-kms" in result.stderr


def test_unknown_kms_key_stops_the_run_naming_the_key(rgw: RgwInfo, rgw_s3: Any,
                                                      rgw_bucket_factory: Callable[..., str],
                                                      tmp_path: Path) -> None:
    """RGW answers 403 InvalidAccessKeyId for a KMS key it cannot retrieve: the run stops before any
    object is written, and the one line names the KMS key."""
    result, bucket, before = refused_run(rgw, rgw_s3, rgw_bucket_factory, tmp_path,
                                         {"mode": "sse-kms", "kms_key_id": "no-such-key"})
    assert_untouched(rgw_s3, bucket, before, result)
    assert "no-such-key" in result.stderr, result.describe()


def test_encryption_over_plain_http_is_refused(rgw: RgwInfo, rgw_s3: Any, rgw_bucket_factory: Callable[..., str],
                                               tmp_path: Path) -> None:
    """`rgw crypt require ssl`: every SSE request over plain HTTP answers 400; the run stops before any write."""
    result, bucket, before = refused_run(rgw, rgw_s3, rgw_bucket_factory, tmp_path,
                                         {"mode": "sse-kms", "kms_key_id": rgw.kms_keys[1]}, https=False)
    assert_untouched(rgw_s3, bucket, before, result)
    assert "sse-kms" in result.stderr


def test_sse_kms_without_a_key_id_is_a_config_error(rgw: RgwInfo, rgw_s3: Any,
                                                    rgw_bucket_factory: Callable[..., str], tmp_path: Path) -> None:
    """RGW answers 400 to SSE-KMS without a key id; rekey never sends one: the config needs kms_key_id."""
    result, bucket, before = refused_run(rgw, rgw_s3, rgw_bucket_factory, tmp_path, {"mode": "sse-kms"})
    assert result.returncode == 2, result.describe()
    assert "kms_key_id" in result.stderr
    assert {k: head(rgw_s3, bucket, k)["ETag"] for k in before} == {k: v["ETag"] for k, v in before.items()}


def test_a_real_concurrent_overwrite_is_still_refused(rgw: RgwInfo, rgw_s3: Any,
                                                      rgw_bucket_factory: Callable[..., str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The If-Match form is switched only when a fresh HEAD shows the object unchanged: an object overwritten
    between the read and the write stays the other writer's, under either form, and nothing is learned."""
    for name, value in rgw.env().items():
        monkeypatch.setenv(name, value)
    bucket = rgw_bucket_factory("rgw-if-match")
    rgw_s3.put_object(Bucket=bucket, Key="k", Body=b"first version")
    h = head(rgw_s3, bucket, "k")
    rgw_s3.put_object(Bucket=bucket, Key="k", Body=b"the other writer's version")

    async def attempt(caps: Caps) -> BaseException | None:
        endpoint = Endpoint(endpoint_url=rgw.s3_https, region=rgw.region, ca_bundle=rgw.ca_bundle)
        async with S3.open(endpoint) as s3:
            job = Job.of(source=s3, dest=s3, src=Location(bucket), dst=Location(bucket), in_place=True,
                         same_endpoint=True, target=Encryption(Mode.SSE_KMS, kms_key_id=rgw.kms_keys[1]),
                         hooks=Hooks(caps=caps))
            stale = ObjectHead("k", 13, h["ETag"], Encryption(Mode.NONE))
            try:   # the bytes as read before the overwrite: the write itself meets the change
                await stream_copy(job, ObjectRef("k", 13, h["ETag"]), stale, tags={}, held=b"first version")
            except ObjectChangedError as exc:
                return exc
            return None

    for caps in (Caps(), Caps(**{CAP_IF_MATCH_UNQUOTED: True})):
        before = dict(caps.values)
        assert isinstance(anyio.run(attempt, caps), ObjectChangedError)
        assert caps.values == before, caps.values
        assert read_back(rgw_s3, bucket, "k") == b"the other writer's version"
