"""Every source encryption x every target encryption, in place and bucket to bucket, small and multipart,
on every real S3 server of the suite (the `server` fixture: SeaweedFS and Ceph RGW).

Each case is one `rekey run` over a bucket holding one small and one multipart object per source mode the
server applies (plaintext, SSE-S3, SSE-KMS key A, SSE-C key A). After it: HeadObject reports the target
encryption and key, the bytes read back are the original ones (SHA-256), system metadata, user metadata and
tags survived, the report calls every object done, and a second run (fresh checkpoint) writes nothing.
A target mode the server does not apply (SSE-S3 on RGW 16, DSSE-KMS on both) is refused with exit 3 before
any object is touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.cli_helpers import (
    MiB,
    head,
    list_keys,
    load_report,
    open_uploads,
    report_by_key,
    run_rekey,
    small_run_section,
    source_section,
    sse_c_md5,
    tags_of,
    write_config,
    write_key_file,
)
from tests.helpers import S3Server, empty_bucket, fresh_bucket_name, read_back, sse_c_params

SOURCE_MODES = ("none", "sse-s3", "sse-kms", "sse-c")
SIZES = {"small": 3 * 1024 + 7, "multipart": 5 * MiB + 4099}  # above the 5 MiB threshold: parts of 5 MiB + 4 KiB
EXPIRES = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Keys:
    """The keys of this module: KMS keys A (sources) and B (targets), SSE-C keys A and B with their files."""

    kms_a: str
    kms_b: str
    sse_c_a: bytes = field(repr=False)
    sse_c_b: bytes = field(repr=False)
    sse_c_a_file: Path
    sse_c_b_file: Path


@dataclass(frozen=True)
class Seeded:
    """One object as written before the run: what must survive it."""

    key: str
    mode: str
    body: bytes = field(repr=False)
    content_type: str
    metadata: dict[str, str]
    tags: dict[str, str]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@pytest.fixture(scope="module")
def keys(server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    a, b = os.urandom(32), os.urandom(32)
    return Keys(server.kms_a, server.kms_b, a, b, write_key_file(d, "a.key", a), write_key_file(d, "b.key", b))


def source_modes(server: S3Server) -> tuple[str, ...]:
    """The source modes a server can hold (RGW 16 stores an SSE-S3 PUT as plaintext: that is "none")."""
    return tuple(m for m in SOURCE_MODES if m == "none" or m in server.applies)


def source_params(mode: str, keys: Keys) -> dict[str, Any]:
    if mode == "sse-s3":
        return {"ServerSideEncryption": "AES256"}
    if mode == "sse-kms":
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": keys.kms_a}
    if mode == "sse-c":
        return sse_c_params(keys.sse_c_a)
    return {}


def seed(s3: Any, bucket: str, keys: Keys, modes: tuple[str, ...], prefix: str = "",
         sizes: dict[str, int] = SIZES) -> list[Seeded]:
    """One object per source mode and size, each with its own system metadata, user metadata and tags."""
    seeded = []
    for mode in modes:
        for size_name, size in sizes.items():
            key = f"{prefix}{mode}-{size_name}.bin"
            obj = Seeded(key, mode, os.urandom(size), f"application/x-{mode}-{size_name}",
                         {"origin": f"{mode}-{size_name}", "owner": "team-a"},
                         {"mode": mode, "size": size_name})
            s3.put_object(Bucket=bucket, Key=key, Body=obj.body, ContentType=obj.content_type,
                          CacheControl="max-age=3600, private", ContentDisposition=f'attachment; filename="{mode}.bin"',
                          ContentEncoding="x-custom", ContentLanguage="fr-CA", Expires=EXPIRES,
                          Metadata=obj.metadata, Tagging="&".join(f"{k}={v}" for k, v in obj.tags.items()),
                          **source_params(mode, keys))
            seeded.append(obj)
    return seeded


def encryption_fingerprint(h: dict[str, Any]) -> tuple[Any, ...]:
    return (h.get("ServerSideEncryption"), h.get("SSEKMSKeyId"), h.get("SSECustomerAlgorithm"),
            h.get("SSECustomerKeyMD5"), h["ETag"], h["LastModified"], h["ContentLength"])


def source_key_of(obj: Seeded, keys: Keys) -> bytes | None:
    return keys.sse_c_a if obj.mode == "sse-c" else None


@dataclass(frozen=True)
class TargetCase:
    name: str
    mode: str
    bucket_key: bool | None = None
    context: dict[str, str] | None = None


TARGETS = [
    TargetCase("sse-s3", "sse-s3"),
    TargetCase("sse-kms", "sse-kms"),
    TargetCase("sse-kms-context-bucket-key", "sse-kms", bucket_key=True, context={"app": "rekey", "tier": "gold"}),
    TargetCase("sse-c", "sse-c"),
]


def target_section(case: TargetCase, keys: Keys) -> dict[str, Any]:
    section: dict[str, Any] = {"mode": case.mode}
    if case.mode == "sse-kms":
        section["kms_key_id"] = keys.kms_b
    if case.mode == "sse-c":
        section["sse_c_key_file"] = str(keys.sse_c_b_file)
    if case.bucket_key is not None:
        section["bucket_key"] = case.bucket_key
    if case.context:
        section["encryption_context"] = case.context
    return section


@pytest.fixture(scope="module")
def b2b_source(server: S3Server, keys: Keys) -> Iterator[tuple[str, list[Seeded], dict[str, Any]]]:
    """A source bucket seeded once for all bucket-to-bucket cases (they never modify it).

    Besides the objects under `in/`, one object lives outside the prefix and must never be copied.
    """
    s3 = server.s3
    bucket = fresh_bucket_name("pairs-src")
    s3.create_bucket(Bucket=bucket)
    seeded = seed(s3, bucket, keys, source_modes(server), prefix="in/")
    s3.put_object(Bucket=bucket, Key="outside/not-me.bin", Body=b"outside the prefix")
    before = {o.key: encryption_fingerprint(head(s3, bucket, o.key, source_key_of(o, keys))) for o in seeded}
    yield bucket, seeded, before
    with contextlib.suppress(Exception):
        empty_bucket(s3, bucket)


def expected_entry(obj: Seeded, case: TargetCase, *, in_place: bool) -> tuple[str, str, str]:
    """(state, source mode, target mode) the report must give: in place, SSE-S3 to SSE-S3 is already right."""
    already = in_place and obj.mode == case.mode == "sse-s3"
    return ("skipped" if already else "done", obj.mode, case.mode)


def check_migrated(server: S3Server, *, bucket: str, dest_key: Callable[[str], str], seeded: list[Seeded],
                   case: TargetCase, keys: Keys, report: dict[str, Any], in_place: bool) -> None:
    """Every seeded object, at its destination key: target encryption, same bytes, metadata and tags."""
    s3 = server.s3
    entries = report_by_key(report)
    read_key = keys.sse_c_b if case.mode == "sse-c" else None
    problems: list[str] = []
    assert sorted(entries) == sorted(o.key for o in seeded), "the report must list exactly the objects in scope"
    for obj in seeded:
        key = dest_key(obj.key)
        entry = entries[obj.key]
        got = (entry["state"], entry["source_mode"], entry["target_mode"])
        if not in_place and entry["action"] == "copy" and obj.mode != "sse-c" and entry["source_mode"] is None:
            got = (got[0], obj.mode, got[2])   # copied before it was read ([run] copy_first): mode not known
        if got != expected_entry(obj, case, in_place=in_place):
            problems.append(f"{obj.key}: report says {entry}")
            continue
        h = head(s3, bucket, key, read_key)
        if case.mode == "sse-s3":
            got_mode = (h.get("ServerSideEncryption"), h.get("SSECustomerAlgorithm"))
            if got_mode != ("AES256", None):
                problems.append(f"{key}: HeadObject encryption {got_mode}, wanted AES256")
        elif case.mode == "sse-kms":
            if h.get("ServerSideEncryption") != "aws:kms" or not server.kms_key_matches(
                    h.get("SSEKMSKeyId"), keys.kms_b):
                problems.append(f"{key}: HeadObject says {h.get('ServerSideEncryption')} "
                                f"{h.get('SSEKMSKeyId')}, wanted aws:kms under {keys.kms_b}")
            # SeaweedFS does not echo BucketKeyEnabled for a single PutObject (only for copies and multipart),
            # so the flag is checked where the server reports it at all: it must never say disabled.
            if case.bucket_key and h.get("BucketKeyEnabled") is False:
                problems.append(f"{key}: bucket key disabled")
            if case.bucket_key and server.name == "seaweedfs" and entry["action"] != "stream" and \
                    h.get("BucketKeyEnabled") is not True:  # RGW 16 never reports a bucket key
                problems.append(f"{key}: {entry['action']} did not enable the bucket key")
        else:
            md5 = str(h.get("SSECustomerKeyMD5", "")).split(",")[0].strip()
            if h.get("SSECustomerAlgorithm") != "AES256" or md5 != sse_c_md5(keys.sse_c_b):
                problems.append(f"{key}: HeadObject SSE-C {h.get('SSECustomerAlgorithm')} md5 {md5}, wanted key B")
        try:
            body = read_back(s3, bucket, key, read_key)
        except ClientError as exc:
            problems.append(f"{key} ({entry['action']}): reported {entry['state']} but GetObject fails: {exc}")
            body = obj.body
        if hashlib.sha256(body).hexdigest() != obj.sha256:
            problems.append(f"{key}: {len(body)} bytes read back differ from the {len(obj.body)} written")
        carried = {
            "ContentType": (h.get("ContentType"), obj.content_type),
            "CacheControl": (h.get("CacheControl"), "max-age=3600, private"),
            "ContentDisposition": (h.get("ContentDisposition"), f'attachment; filename="{obj.mode}.bin"'),
            "ContentEncoding": (h.get("ContentEncoding"), "x-custom"),
            "ContentLanguage": (h.get("ContentLanguage"), "fr-CA"),
            "Expires": (h.get("Expires"), EXPIRES),
            "Metadata": (h.get("Metadata"), obj.metadata),
            "Tags": (tags_of(s3, bucket, key), obj.tags),
        }
        for name, (got, wanted) in carried.items():
            if got != wanted:
                problems.append(f"{key} ({entry['action']}): {name} is {got!r}, was {wanted!r}")
    assert not problems, "\n".join(problems)
    assert open_uploads(s3, bucket) == [], "a finished run left multipart uploads behind"


def fingerprints(s3: Any, bucket: str, keys_and_sse_c: dict[str, bytes | None]) -> dict[str, tuple[Any, ...]]:
    return {k: encryption_fingerprint(head(s3, bucket, k, c)) for k, c in keys_and_sse_c.items()}


def assert_refused_untouched(server: S3Server, result: Any, bucket: str, mode: str,
                             before: dict[str, tuple[Any, ...]], seeded: list[Seeded], keys: Keys) -> None:
    """Exit 3, the one-line refusal naming the mode, and not one object rewritten, added or left behind."""
    assert result.returncode == 3, result.describe()
    assert mode in result.stderr and "refus" in result.stderr, result.describe()   # refusing, refuses
    assert len(result.stderr.strip().splitlines()) == 1, result.describe()
    after = fingerprints(server.s3, bucket, {k: c for k, c in ((o.key, source_key_of(o, keys)) for o in seeded)
                                               if k in before})
    assert after == before, "objects were rewritten although the run was refused"
    assert open_uploads(server.s3, bucket) == []


def second_run_writes_nothing(server: S3Server, tmp_path: Path, config_sections: dict[str, Any], *,
                              bucket: str, dest_keys: list[str], case: TargetCase, keys: Keys,
                              first_ended: float) -> None:
    """A second run with a fresh checkpoint decides from the server alone: every object skipped, no byte
    copied or streamed, every destination object as the first run left it (ETag, LastModified, encryption)."""
    read_key = keys.sse_c_b if case.mode == "sse-c" else None
    before = fingerprints(server.s3, bucket, dict.fromkeys(dest_keys, read_key))
    time.sleep(max(0.0, first_ended + 1.1 - time.monotonic()))  # LastModified has one-second resolution
    sections = {**config_sections, "run": small_run_section(tmp_path / "cp2.sqlite")}
    config = write_config(tmp_path, sections, name="again.toml")
    result = run_rekey(server.info, "run", "-q", "-c", str(config), "--report", str(tmp_path / "again.json"))
    assert result.returncode == 0, result.describe()
    summary = load_report(tmp_path / "again.json")["summary"]
    assert summary["by_state"] == {"skipped": len(dest_keys)}, summary
    assert summary["bytes_copied"] == 0 and summary["bytes_through_client"] == 0, summary
    assert fingerprints(server.s3, bucket, dict.fromkeys(dest_keys, read_key)) == before


@pytest.mark.parametrize("case", TARGETS, ids=[t.name for t in TARGETS])
def test_in_place(case: TargetCase, server: S3Server, server_bucket_factory: Callable[..., str], keys: Keys,
                  tmp_path: Path) -> None:
    s3, bucket = server.s3, server_bucket_factory("pairs-in-place")
    seeded = seed(s3, bucket, keys, source_modes(server))
    sections: dict[str, Any] = {
        "source": source_section(server.info, bucket, sse_c_key_file=str(keys.sse_c_a_file)),
        "target": target_section(case, keys),
    }
    config = write_config(tmp_path, {**sections, "run": small_run_section(tmp_path / "cp.sqlite")})
    if case.mode not in server.applies:
        before = fingerprints(s3, bucket, {o.key: source_key_of(o, keys) for o in seeded})
        time.sleep(1.1)  # LastModified has one-second resolution: any rewrite now shows
        result = run_rekey(server.info, "run", "-q", "-c", str(config), "--report", str(tmp_path / "report.json"))
        assert_refused_untouched(server, result, bucket, case.mode, before, seeded, keys)
        assert list_keys(s3, bucket) == sorted(o.key for o in seeded), "the refused run left objects behind"
        return
    result = run_rekey(server.info, "run", "-q", "-c", str(config), "--report", str(tmp_path / "report.json"))
    ended = time.monotonic()
    assert result.returncode == 0, result.describe()
    report = load_report(tmp_path / "report.json")
    check_migrated(server, bucket=bucket, dest_key=lambda k: k, seeded=seeded, case=case, keys=keys, report=report,
                   in_place=True)
    assert list_keys(s3, bucket) == sorted(o.key for o in seeded), "in place must not add or lose keys"
    second_run_writes_nothing(server, tmp_path, sections, bucket=bucket, dest_keys=[o.key for o in seeded],
                              case=case, keys=keys, first_ended=ended)


@pytest.mark.parametrize("case", TARGETS, ids=[t.name for t in TARGETS])
def test_bucket_to_bucket_with_prefix_rewrite(case: TargetCase, server: S3Server,
                                              server_bucket_factory: Callable[..., str], keys: Keys,
                                              b2b_source: tuple[str, list[Seeded], dict[str, Any]],
                                              tmp_path: Path) -> None:
    s3 = server.s3
    src_bucket, seeded, before = b2b_source
    dst_bucket = server_bucket_factory("pairs-dst")
    sections: dict[str, Any] = {
        "source": source_section(server.info, src_bucket, prefix="in/", sse_c_key_file=str(keys.sse_c_a_file)),
        "destination": {"bucket": dst_bucket, "prefix": "out/"},
        "target": target_section(case, keys),
    }
    config = write_config(tmp_path, {**sections, "run": small_run_section(tmp_path / "cp.sqlite")})
    result = run_rekey(server.info, "run", "-q", "-c", str(config), "--report", str(tmp_path / "report.json"))
    if case.mode not in server.applies:
        assert_refused_untouched(server, result, src_bucket, case.mode, before, seeded, keys)
        assert list_keys(s3, dst_bucket) == [], "the refused run wrote into the destination"
        return
    ended = time.monotonic()
    assert result.returncode == 0, result.describe()
    report = load_report(tmp_path / "report.json")
    assert report["summary"]["by_state"] == {"done": len(seeded)}, report["summary"]

    def rewrite(key: str) -> str:
        return "out/" + key.removeprefix("in/")

    assert list_keys(s3, dst_bucket) == sorted(rewrite(o.key) for o in seeded)
    check_migrated(server, bucket=dst_bucket, dest_key=rewrite, seeded=seeded, case=case, keys=keys, report=report,
                   in_place=False)
    after = {o.key: encryption_fingerprint(head(s3, src_bucket, o.key, source_key_of(o, keys))) for o in seeded}
    assert after == before, "a bucket-to-bucket run changed its source objects"
    assert list_keys(s3, src_bucket) == sorted([*(o.key for o in seeded), "outside/not-me.bin"])
    second_run_writes_nothing(server, tmp_path, sections, bucket=dst_bucket,
                              dest_keys=[rewrite(o.key) for o in seeded], case=case, keys=keys, first_ended=ended)


def test_same_kms_key_is_skipped_without_a_write(server: S3Server, server_bucket_factory: Callable[..., str],
                                                 keys: Keys, tmp_path: Path) -> None:
    s3, bucket = server.s3, server_bucket_factory("pairs-same")
    seeded = seed(s3, bucket, keys, ("sse-kms",))
    before = {o.key: encryption_fingerprint(head(s3, bucket, o.key)) for o in seeded}
    time.sleep(1.1)  # LastModified has one-second resolution: any rewrite now shows
    config = write_config(tmp_path, {
        "source": source_section(server.info, bucket),
        "target": {"mode": "sse-kms", "kms_key_id": keys.kms_a},
        "run": small_run_section(tmp_path / "cp.sqlite"),
    })
    result = run_rekey(server.info, "run", "-q", "-c", str(config), "--report", str(tmp_path / "report.json"))
    assert result.returncode == 0, result.describe()
    report = load_report(tmp_path / "report.json")
    assert {(o["key"], o["action"], o["state"]) for o in report["objects"]} == {
        (o.key, "skip", "skipped") for o in seeded}
    assert report["summary"]["bytes_copied"] == 0 and report["summary"]["bytes_through_client"] == 0
    assert {o.key: encryption_fingerprint(head(s3, bucket, o.key)) for o in seeded} == before


def test_dsse_kms_target_is_refused_on_a_server_that_stores_plaintext(
        server: S3Server, server_bucket_factory: Callable[..., str], keys: Keys, tmp_path: Path) -> None:
    s3, bucket = server.s3, server_bucket_factory("pairs-dsse")
    seeded = seed(s3, bucket, keys, source_modes(server), sizes={"small": 2048})
    seeded += seed(s3, bucket, keys, ("none",), sizes={"multipart": 6 * MiB})
    before = fingerprints(s3, bucket, {o.key: source_key_of(o, keys) for o in seeded})
    time.sleep(1.1)  # LastModified has one-second resolution: any rewrite now shows
    config = write_config(tmp_path, {
        "source": source_section(server.info, bucket, sse_c_key_file=str(keys.sse_c_a_file)),
        "target": {"mode": "dsse-kms", "kms_key_id": keys.kms_b},
        "run": small_run_section(tmp_path / "cp.sqlite"),
    })
    result = run_rekey(server.info, "run", "-q", "-c", str(config), "--report", str(tmp_path / "report.json"))
    assert_refused_untouched(server, result, bucket, "dsse-kms", before, seeded, keys)
    for obj in seeded:
        assert read_back(s3, bucket, obj.key, source_key_of(obj, keys)) == obj.body, obj.key
    assert list_keys(s3, bucket) == sorted(o.key for o in seeded), "the refused run left scratch objects behind"
