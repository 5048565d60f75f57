"""Manifests: S3 Inventory CSV (default column order, manifest.json fileSchema, gzip) and plain key lists."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.listing import KeyFilter
from engine.manifest import POSITION_WIDTH, manifest_pages, read_manifest, trusted_skip
from workers.errors import ConfigError
from workers.model import Encryption, Mode, ObjectRef

ALL = KeyFilter("", (), ())
# A versioned inventory in AWS's default column order, all fields quoted as Inventory writes them.
VERSIONED = (
    '"src","docs/my%20report+2024.pdf","v1","true","false","10","2024-05-01T10:00:00.000Z","0cc175b9c0f1b6a831c399e269772661","STANDARD","false","","SSE-S3"\n'
    '"src","docs/caf%C3%A9+%E2%82%AC.txt","v2","true","false","7","2024-05-01T10:00:00.000Z","92eb5ffee6ae2fec3ad71c777531578f","STANDARD","false","","NOT-SSE"\n'
    '"src","docs/old","v3","false","false","5","2024-05-01T10:00:00.000Z","4a8a08f09d37b73795649038408b5f33","STANDARD","false","","SSE-KMS"\n'
    '"src","docs/gone","v4","true","true","","2024-05-01T10:00:00.000Z","","","","",""\n'
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def pages(path: Path, **kw: Any) -> list[tuple[list[ObjectRef], str, bool]]:
    async def collect() -> list[tuple[list[ObjectRef], str, bool]]:
        return [p async for p in manifest_pages(path, kw.pop("key_filter", ALL), bucket="src", **kw)]
    return anyio.run(collect)


def test_inventory_keys_are_url_decoded_and_columns_read_in_aws_default_order(tmp_path: Path) -> None:
    rows = list(read_manifest(write(tmp_path, "inv.csv", VERSIONED)))
    assert [r.key for r in rows] == ["docs/my report 2024.pdf", "docs/café €.txt", "docs/old", "docs/gone"]
    first = rows[0]
    assert (first.bucket, first.version_id, first.is_latest, first.size, first.mode) == ("src", "v1", True, 10,
                                                                                       Mode.SSE_S3)
    assert first.etag == '"0cc175b9c0f1b6a831c399e269772661"'  # quoted like S3's listings
    assert rows[1].mode == Mode.NONE and rows[2].mode == Mode.SSE_KMS
    assert rows[2].is_latest is False and rows[3].is_delete_marker is True


def test_unversioned_inventory_without_schema(tmp_path: Path) -> None:
    text = '"src","a%2Fb+c","3","2024-05-01T10:00:00.000Z","etag1","STANDARD","false","","SSE-KMS"\n'
    (row,) = read_manifest(write(tmp_path, "inv.csv", text))
    assert (row.key, row.size, row.version_id, row.mode, row.etag) == ("a/b c", 3, None, Mode.SSE_KMS, '"etag1"')


def test_manifest_json_schema_next_to_the_csv_decides_the_columns(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"fileSchema": "Bucket, Key, Size, EncryptionStatus, ETag", "files": []}), encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()
    path = data / "part-0.csv.gz"
    path.write_bytes(gzip.compress(b'"src","x+y","42","DSSE-KMS","abc"\n'))
    (row,) = read_manifest(path)
    assert (row.key, row.size, row.mode, row.etag) == ("x y", 42, Mode.DSSE_KMS, '"abc"')


def test_manifest_json_as_the_path_reads_its_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "one.csv.gz").write_bytes(gzip.compress(b'"src","a","1"\n"src","b","2"\n'))
    (tmp_path / "data" / "two.csv.gz").write_bytes(gzip.compress(b'"src","c","3"\n'))
    manifest = write(tmp_path, "manifest.json", json.dumps({
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": "inv/src/cfg/data/one.csv.gz"}, {"key": "inv/src/cfg/data/two.csv.gz"}]}))
    rows = list(read_manifest(manifest))
    assert [(r.line, r.key, r.size) for r in rows] == [(1, "a", 1), (2, "b", 2), (3, "c", 3)]


def test_plain_key_list_is_taken_verbatim(tmp_path: Path) -> None:
    path = write(tmp_path, "keys.txt", "a b/c+d%20.txt\n\nünï/€, with comma\n  lead\n")
    assert [r.key for r in read_manifest(path)] == ["a b/c+d%20.txt", "ünï/€, with comma", "  lead"]
    # without .txt: the first line has no comma, so it is a key list too
    path = write(tmp_path, "keys.lst", "one\ntwo,three\n")
    assert [r.key for r in read_manifest(path)] == ["one", "two,three"]


@pytest.mark.parametrize(("text", "expected"), [
    ('"src","k","ten"\n', "line 1: size 'ten' is not a whole number of bytes"),
    ('"src","ok","1"\n"src","","1"\n', "line 2: empty key"),
    ('"src","k","v","maybe","false","1"\n', "line 1: size 'v' is not a whole number of bytes (add the inventory"),
    ('"src","bad%FF","1"\n', "line 1: key is not valid URL-encoded UTF-8"),
])
def test_malformed_rows_name_the_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=r"^source\.manifest: " + expected.replace("(", r"\(")):
        list(read_manifest(write(tmp_path, "inv.csv", text)))


def test_schema_mismatch_and_unknown_encryption_status(tmp_path: Path) -> None:
    write(tmp_path, "manifest.json", json.dumps({"fileSchema": "Bucket, Key, EncryptionStatus"}))
    with pytest.raises(ConfigError, match="line 1: unknown EncryptionStatus 'SSE-XYZ'"):
        list(read_manifest(write(tmp_path, "a.csv", '"src","k","SSE-XYZ"\n')))
    with pytest.raises(ConfigError, match="line 1: expected 3 fields"):
        list(read_manifest(write(tmp_path, "b.csv", '"src","k"\n')))
    write(tmp_path, "manifest.json", json.dumps({"fileSchema": "Bucket, Key, VersionId, IsLatest"}))
    with pytest.raises(ConfigError, match="line 2: IsLatest is 'maybe', expected true or false"):
        list(read_manifest(write(tmp_path, "c.csv", '"src","k","v","true"\n"src","k","v","maybe"\n')))


def test_pages_keep_current_objects_of_the_bucket_with_filters_and_positions(tmp_path: Path) -> None:
    got = pages(write(tmp_path, "inv.csv", VERSIONED), page_size=2)
    assert [([r.key for r in refs], pos, last) for refs, pos, last in got] == [
        (["docs/my report 2024.pdf", "docs/café €.txt"], "2".zfill(POSITION_WIDTH), False),
        ([], "4".zfill(POSITION_WIDTH), True),   # noncurrent version and delete marker passed over
    ]
    ref = got[0][0][0]
    assert ref.version_id is None and ref.listed_mode == Mode.SSE_S3 and ref.size == 10
    only_txt = pages(write(tmp_path, "inv2.csv", VERSIONED), key_filter=KeyFilter("docs/", ("*.txt",), ()))
    assert [r.key for refs, _, _ in only_txt for r in refs] == ["docs/café €.txt"]


def test_resume_continues_after_the_recorded_line(tmp_path: Path) -> None:
    path = write(tmp_path, "keys.txt", "".join(f"k{i}\n" for i in range(1, 8)))
    first = pages(path, page_size=3)
    assert [p for _, p, _ in first] == [s.zfill(POSITION_WIDTH) for s in ("3", "6", "7")]
    resumed = pages(path, page_size=3, start_after=first[0][1])
    assert [r.key for refs, _, _ in resumed for r in refs] == [f"k{i}" for i in range(4, 8)]
    assert resumed[-1][1:] == ("7".zfill(POSITION_WIDTH), True)
    with pytest.raises(ConfigError, match="not a manifest row"):
        pages(path, start_after="some/key")


def test_a_row_of_another_bucket_stops_the_run(tmp_path: Path) -> None:
    path = write(tmp_path, "inv.csv", '"src","a","1"\n"other","b","1"\n')
    with pytest.raises(ConfigError, match=r"source\.manifest: line 2: row is for bucket 'other'"):
        pages(path)


def test_empty_manifest_gives_one_last_empty_page(tmp_path: Path) -> None:
    assert pages(write(tmp_path, "keys.txt", "")) == [([], "", True)]


@pytest.mark.parametrize(("listed", "target", "skip"), [
    (Mode.SSE_S3, Encryption(Mode.SSE_S3), True),
    (Mode.SSE_KMS, Encryption(Mode.SSE_KMS, kms_key_id="k"), False),  # the status does not name the key
    (Mode.NONE, Encryption(Mode.SSE_S3), False),
    (None, Encryption(Mode.SSE_S3), False),
])
def test_trusted_skip_only_when_the_status_says_everything(listed: Mode | None, target: Encryption,
                                                           skip: bool) -> None:
    assert trusted_skip(ObjectRef("k", 1, "e", listed_mode=listed), target) is skip
