"""Which objects a run covers when `[source] manifest` is set: an S3 Inventory CSV or a plain key list.

Formats, detected from the file:

- **S3 Inventory CSV** (optionally gzipped, as Inventory delivers it): no header, every field quoted, keys
  URL-encoded (`%20` or `+` for a space, UTF-8 percent escapes) and decoded here with `unquote_plus`. The
  columns come from the `fileSchema` of a `manifest.json` found next to the CSV file (or in its parent
  directory, Inventory's own layout), or, when there is none, from AWS's default order:
  `Bucket, Key, [VersionId, IsLatest, IsDeleteMarker,] Size, LastModifiedDate, ETag, StorageClass, ...`
  (the versioned form is recognised by IsLatest/IsDeleteMarker being true/false); without a schema the
  encryption column is the first field after the key whose value is an `EncryptionStatus` value.
  The path may also be the `manifest.json` itself: its `files` are then read in order, each found by its
  base name next to the manifest or in a `data/` directory beside it.
- **Plain key list**: one key per line, not encoded, taken verbatim; chosen for a `.txt` file or when the
  first non-empty line has no comma. Empty lines are ignored.

Every row must name the run's source bucket: a manifest of another bucket is a configuration mistake
(the wrong inventory), and processing only the matching rows would silently leave the others out, so
it is a `ConfigError` naming the line. Delete markers and noncurrent versions (IsLatest false) are not
objects to re-encrypt from a manifest and are passed over; rows name keys, so the version processed is
the key's current one (guarded by the ETag its HeadObject shows, like a listed object).

Resume: a page's position is the number of the last row consumed, zero-padded (`POSITION_WIDTH` digits)
so that positions sort like the listing's keys; a resumed run passes it back as `start_after`.
The manifest must not change between a run and its resume.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO
from urllib.parse import unquote_plus

import anyio.to_thread

from engine.listing import KeyFilter, pair_instruction_files
from workers.errors import ConfigError
from workers.model import Encryption, Mode, ObjectRef

POSITION_WIDTH = 12

ENCRYPTION_STATUS = {
    "NOT-SSE": Mode.NONE,
    "SSE-S3": Mode.SSE_S3,
    "SSE-KMS": Mode.SSE_KMS,
    "DSSE-KMS": Mode.DSSE_KMS,
    "SSE-C": Mode.SSE_C,
}

_VERSIONED = ("Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size", "LastModifiedDate", "ETag",
              "StorageClass", "IsMultipartUploaded", "ReplicationStatus", "EncryptionStatus")
_CURRENT = ("Bucket", "Key", "Size", "LastModifiedDate", "ETag", "StorageClass", "IsMultipartUploaded",
            "ReplicationStatus", "EncryptionStatus")
_BOOL = {"true": True, "false": False}


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One row of a manifest. `line` counts rows from 1 across all the manifest's files."""

    line: int
    key: str
    bucket: str | None = None
    version_id: str | None = None
    is_latest: bool = True
    is_delete_marker: bool = False
    size: int | None = None
    etag: str | None = None          # quoted, as S3's listings and HeadObject give it
    last_modified: float | None = None
    mode: Mode | None = None         # from EncryptionStatus


def _error(where: str, line: int, what: str) -> ConfigError:
    return ConfigError(f"source.manifest: {where}line {line}: {what}")


def _open_text(path: Path) -> IO[str]:
    with path.open("rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    if gz:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def _schema_of(path: Path) -> tuple[str, ...] | None:
    """The fileSchema of a manifest.json next to the CSV (or one directory up), if there is one."""
    for candidate in (path.parent / "manifest.json", path.parent.parent / "manifest.json"):
        if candidate.is_file() and candidate != path:
            return _read_manifest_json(candidate)[0]
    return None


def _read_manifest_json(path: Path) -> tuple[tuple[str, ...], list[Path]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        schema = tuple(c.strip() for c in str(doc["fileSchema"]).split(",") if c.strip())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"source.manifest: {path}: not a readable S3 Inventory manifest.json "
                          f"with a fileSchema ({type(exc).__name__})") from None
    if "Key" not in schema:
        raise ConfigError(f"source.manifest: {path}: fileSchema has no Key column")
    files: list[Path] = []
    for entry in doc.get("files", []) or []:
        name = Path(str(entry.get("key", ""))).name if isinstance(entry, dict) else ""
        found = next((p for p in (path.parent / name, path.parent / "data" / name) if name and p.is_file()), None)
        if found is None:
            raise ConfigError(f"source.manifest: {path}: listed data file {name or entry!r} not found next to it "
                              "or in data/")
        files.append(found)
    return schema, files


def _is_key_list(path: Path) -> bool:
    if path.suffix.lower() == ".txt":
        return True
    with _open_text(path) as f:
        for raw in f:
            line = raw.rstrip("\r\n")
            if line:
                return "," not in line
    return False


def read_manifest(path: str | Path) -> Iterator[ManifestRow]:
    """Every row of a manifest, in file order. Raises `ConfigError` on the first malformed row."""
    p = Path(path)
    if p.name == "manifest.json":
        schema, files = _read_manifest_json(p)
        line = 0
        for data in files:
            for row in _read_csv(data, schema, first_line=line + 1, where=f"{data.name} "):
                line = row.line
                yield row
        return
    if _is_key_list(p):
        yield from _read_key_list(p)
    else:
        yield from _read_csv(p, _schema_of(p), first_line=1, where="")


def _read_key_list(path: Path) -> Iterator[ManifestRow]:
    with _open_text(path) as f:
        for number, raw in enumerate(f, start=1):
            key = raw.rstrip("\r\n")
            if key:
                yield ManifestRow(line=number, key=key)


def _read_csv(path: Path, schema: Sequence[str] | None, *, first_line: int, where: str) -> Iterator[ManifestRow]:
    with _open_text(path) as f:
        for offset, fields in enumerate(csv.reader(f, strict=True)):
            number = first_line + offset
            if not fields or fields == [""]:
                continue
            yield _parse_row(fields, schema, number, where)


def _default_schema(fields: Sequence[str]) -> tuple[str, ...]:
    versioned = len(fields) >= 5 and fields[3].lower() in _BOOL and fields[4].lower() in _BOOL
    return _VERSIONED if versioned else _CURRENT


def _parse_row(fields: Sequence[str], schema: Sequence[str] | None, line: int, where: str) -> ManifestRow:
    columns = schema or _default_schema(fields)
    if len(fields) < 2:
        raise _error(where, line, f"expected at least bucket and key, got {len(fields)} field(s)")
    if schema is not None and len(fields) != len(schema):
        raise _error(where, line, f"expected {len(schema)} fields (manifest.json fileSchema), got {len(fields)}")
    named = dict(zip(columns, fields, strict=False))
    try:
        key = unquote_plus(named.get("Key", ""), encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise _error(where, line, "key is not valid URL-encoded UTF-8") from None
    if not key:
        raise _error(where, line, "empty key")
    size = None
    if named.get("Size"):
        try:
            size = int(named["Size"])
        except ValueError:
            raise _error(where, line, f"size {named['Size']!r} is not a whole number of bytes"
                         + ("" if schema else " (add the inventory's manifest.json for its column order)")) from None
    status = named.get("EncryptionStatus") if schema else next(
        (v for v in fields[2:] if v in ENCRYPTION_STATUS), None)
    if status and status not in ENCRYPTION_STATUS:
        raise _error(where, line, f"unknown EncryptionStatus {status!r} (expected one of "
                     f"{', '.join(ENCRYPTION_STATUS)})")
    return ManifestRow(
        line=line, key=key, bucket=named.get("Bucket") or None, version_id=named.get("VersionId") or None,
        is_latest=_flag(named.get("IsLatest"), True, where, line, "IsLatest"),
        is_delete_marker=_flag(named.get("IsDeleteMarker"), False, where, line, "IsDeleteMarker"),
        size=size, etag=_quoted(named.get("ETag")), last_modified=_timestamp(named.get("LastModifiedDate")),
        mode=ENCRYPTION_STATUS[status] if status else None)


def _flag(value: str | None, default: bool, where: str, line: int, name: str) -> bool:
    if not value:
        return default
    if value.lower() not in _BOOL:
        raise _error(where, line, f"{name} is {value!r}, expected true or false")
    return _BOOL[value.lower()]


def _quoted(etag: str | None) -> str | None:
    if not etag:
        return None
    return etag if etag.startswith('"') else f'"{etag}"'


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def row_ref(row: ManifestRow) -> ObjectRef:
    """The object a row names: its key's current version (see the module docstring)."""
    return ObjectRef(key=row.key, size=row.size or 0, etag=row.etag or "", version_id=None,
                     last_modified=row.last_modified, is_latest=True, listed_mode=row.mode)


def trusted_skip(ref: ObjectRef, target: Encryption) -> bool:
    """With `manifest_trust_encryption`: can this object be called done without a HeadObject?

    Only when the inventory's EncryptionStatus is the target mode and the mode has nothing more to
    match: SSE-S3. The status does not say which KMS key or SSE-C key, so those always get a HEAD.
    """
    return ref.listed_mode is not None and ref.listed_mode == target.mode == Mode.SSE_S3


def _position(line: int) -> str:
    return str(line).zfill(POSITION_WIDTH)


def _start_line(start_after: str) -> int:
    if not start_after:
        return 0
    if not start_after.isdigit():
        raise ConfigError(f"source.manifest: the checkpoint's listing position {start_after!r} is not a manifest "
                          "row: it was written by a run that listed the bucket")
    return int(start_after)


def _wanted(row: ManifestRow, bucket: str, key_filter: KeyFilter) -> bool:
    if row.bucket is not None and row.bucket != bucket:
        raise _error("", row.line, f"row is for bucket {row.bucket!r}, the source bucket is {bucket!r}")
    return row.is_latest and not row.is_delete_marker and key_filter.wants(row.key)


def _pair_in_page(refs: list[ObjectRef]) -> list[ObjectRef]:
    """Instruction files listed with their object (same page) travel with it; the pairing of the others
    is not known (rows are in no order), so the run looks for their instruction files itself."""
    paired = pair_instruction_files(refs)
    return [r if r.paired else replace(r, paired=None) for r in paired]


def _take(rows: Iterator[ManifestRow], count: int) -> list[ManifestRow]:
    out: list[ManifestRow] = []
    for row in rows:
        out.append(row)
        if len(out) >= count:
            break
    return out


def data_files(path: str | Path) -> list[Path]:
    """The data files of an S3 Inventory `manifest.json` (each listed in parallel as its own range); [] for
    any other manifest."""
    p = Path(path)
    return _read_manifest_json(p)[1] if p.name == "manifest.json" else []


async def data_file_pages(manifest: str | Path, data: Path, key_filter: KeyFilter, *, bucket: str,
                          start_after: str = "", page_size: int = 1000,
                          ) -> AsyncIterator[tuple[list[ObjectRef], str, bool]]:
    """Pages of one data file of a `manifest.json`, positions counting its own rows (see manifest_pages)."""
    schema, _ = _read_manifest_json(Path(manifest))
    async for page in _pages(_read_csv(data, schema, first_line=1, where=f"{data.name} "), key_filter,
                             bucket=bucket, start_after=start_after, page_size=page_size):
        yield page


async def manifest_pages(path: str | Path, key_filter: KeyFilter, *, bucket: str, start_after: str = "",
                         page_size: int = 1000) -> AsyncIterator[tuple[list[ObjectRef], str, bool]]:
    """Pages of wanted objects as (refs, position, last page?), like `engine.listing.list_objects`.

    The file is read in a worker thread, one page at a time, so a large manifest never blocks the loop.
    """
    async for page in _pages(read_manifest(path), key_filter, bucket=bucket, start_after=start_after,
                             page_size=page_size):
        yield page


async def _pages(rows: Iterator[ManifestRow], key_filter: KeyFilter, *, bucket: str, start_after: str,
                 page_size: int) -> AsyncIterator[tuple[list[ObjectRef], str, bool]]:
    first = _start_line(start_after)
    page: list[ObjectRef] | None = None
    position = _position(first) if first else ""
    while True:
        chunk = await anyio.to_thread.run_sync(_take, rows, page_size)
        if not chunk:
            break
        if page is not None:
            yield page, position, False
        page = _pair_in_page([row_ref(r) for r in chunk if r.line > first and _wanted(r, bucket, key_filter)])
        position = _position(max(first, chunk[-1].line))
    yield page or [], position, True
