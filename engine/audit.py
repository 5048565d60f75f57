"""`rekey audit`: how a bucket is encrypted, per mode and per key, from a listing and one HeadObject per object.

Read-only. SSE-C objects answer HEAD with 400 without their key: they count as sse-c, with the key MD5 when
the config's `[source] sse_c_key_file` opens them, else as "unknown key". Client-side objects are found by
their S3EC metadata (and, for envelopes kept in `<key>.instruction`, by that sibling); instruction files are
counted apart. No key material is ever printed: only KMS key ids, SSE-C key MD5s and S3EC format names.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio

from engine.chart import AFTER_COLOR, BEFORE_COLOR, MODES, Series, bar_chart, bytes_by_mode, human_bytes
from engine.config import Config, Target, load_config
from engine.listing import KeyFilter
from engine.retry import retrier_for
from engine.terminal import shown
from workers import sse
from workers.cse.envelope import (
    INSTRUCTION_FILE_MAX,
    INSTRUCTION_SUFFIX,
    CseFormat,
    detect_format,
    is_instruction_file,
    load_instruction_file,
    needs_instruction_file,
    parse_envelope,
)
from workers.errors import ConfigError, CorruptObjectError, FatalError, KeyRequiredError, RekeyError, WrongKeyError
from workers.model import Encryption, Mode, SecretKey
from workers.s3 import S3, Endpoint

UNKNOWN_KEY = "unknown key"
CSV_COLUMNS = ("key", "version_id", "size", "mode", "kms_key_id", "sse_c_key_md5", "cse_format", "cse_wrap",
               "is_latest")
_KEYED_MODES = (Mode.SSE_KMS, Mode.DSSE_KMS, Mode.SSE_C, Mode.CSE)
_WRAPS_BY_KEYRING = {"kms": {"kms+context"}, "aes": {"AES/GCM"}, "rsa": {"RSA-OAEP-SHA1"}}
_NOT_IN_TARGET_SHOWN = 20


@dataclass(frozen=True, slots=True)
class AuditScope:
    """What to audit and with which keys (no secret is printed; `sse_c_key` only opens HEADs)."""

    endpoint: Endpoint
    bucket: str
    key_filter: KeyFilter
    sse_c_key: SecretKey | None = dataclasses.field(default=None, repr=False)
    target: Target | None = None
    versions: bool = False
    concurrency: int = 32


@dataclass(frozen=True, slots=True)
class Listed:
    """One object version as listed."""

    key: str
    size: int
    version_id: str | None = None
    is_latest: bool = True


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """How one object (version) is encrypted, as far as HEAD and its metadata tell."""

    key: str
    size: int
    mode: Mode
    version_id: str | None = None
    is_latest: bool = True
    kms_key_id: str | None = None
    sse_c_key_md5: str | None = None       # None with mode sse-c: the key is unknown
    cse_format: str | None = None          # v1 / v2 / v3
    cse_wrap: str | None = None            # kms+context, AES/GCM, ... or "instruction-file"
    instruction_file: bool = False         # an S3EC instruction file: counted apart
    error: str | None = None               # HEAD failed (object gone, access denied): not counted

    def key_label(self) -> str | None:
        """The per-key bucket this object counts in (None for none and sse-s3)."""
        if self.mode in (Mode.SSE_KMS, Mode.DSSE_KMS):
            return self.kms_key_id or "(bucket default key)"
        if self.mode == Mode.SSE_C:
            return self.sse_c_key_md5 or UNKNOWN_KEY
        if self.mode == Mode.CSE:
            return f"{self.cse_format}/{self.cse_wrap}"
        return None

    def csv_row(self) -> list[str]:
        return [self.key, self.version_id or "", str(self.size), self.mode.value, self.kms_key_id or "",
                self.sse_c_key_md5 or (UNKNOWN_KEY if self.mode == Mode.SSE_C else ""),
                "instruction-file" if self.instruction_file else (self.cse_format or ""), self.cse_wrap or "",
                "true" if self.is_latest else "false"]


# --- listing and inspection ------------------------------------------------------------------------------


async def _listed(s3: S3, scope: AuditScope, delete_markers: list[str]) -> AsyncIterator[Listed]:
    """Latest objects (ListObjectsV2), or every version (ListObjectVersions) with `scope.versions`."""
    bucket, wants = scope.bucket, scope.key_filter.wants
    if not scope.versions:
        async for refs in s3.list_pages(bucket, scope.key_filter.prefix):
            for ref in refs:
                if wants(ref.key):
                    yield Listed(ref.key, ref.size)
        return
    key_marker: str = ""
    version_marker: str | None = None
    while True:
        page = await s3.list_versions(bucket, prefix=scope.key_filter.prefix, key_marker=key_marker,
                                      version_id_marker=version_marker)
        for v in page.versions:
            if wants(v.key):
                yield Listed(v.key, v.size, v.version_id, v.is_latest)
        delete_markers.extend(m.key for m in page.delete_markers if wants(m.key))
        if not page.truncated or not page.next_key_marker:
            return
        key_marker, version_marker = str(page.next_key_marker), page.next_version_id_marker or ""


def _cse_fields(metadata: Mapping[str, str]) -> tuple[str, str] | None:
    """(format, wrapping) from an object's S3EC metadata, or None when it carries no envelope."""
    fmt = detect_format(metadata)
    if fmt is None:
        return (CseFormat.V3.value, "instruction-file") if needs_instruction_file(metadata) else None
    try:
        return fmt.value, parse_envelope(metadata).wrap_alg.value
    except CorruptObjectError:
        return fmt.value, "invalid-envelope"


async def inspect(s3: S3, scope: AuditScope, item: Listed) -> AuditRecord:
    """HEAD one object version and classify it."""
    base = AuditRecord(item.key, item.size, Mode.NONE, item.version_id, item.is_latest)
    try:
        head = await s3.head(scope.bucket, item.key, version_id=item.version_id)
    except KeyRequiredError:
        return await _inspect_sse_c(s3, scope, base)
    except FatalError:
        raise
    except RekeyError as exc:
        return dataclasses.replace(base, error=exc.message)
    enc = head.encryption
    record = dataclasses.replace(base, mode=enc.mode, kms_key_id=enc.kms_key_id, sse_c_key_md5=enc.key_md5)
    if item.key.endswith(INSTRUCTION_SUFFIX) or is_instruction_file(head.metadata):
        return dataclasses.replace(record, instruction_file=True)
    cse = _cse_fields(head.metadata)
    if cse is not None:
        return dataclasses.replace(record, mode=Mode.CSE, kms_key_id=None, sse_c_key_md5=None,
                                   cse_format=cse[0], cse_wrap=cse[1])
    return record


async def _inspect_sse_c(s3: S3, scope: AuditScope, base: AuditRecord) -> AuditRecord:
    record = dataclasses.replace(base, mode=Mode.SSE_C)
    if scope.sse_c_key is None or scope.endpoint.is_plain_http:  # never send a customer key over plain HTTP
        return record
    try:
        head = await s3.head(scope.bucket, base.key, version_id=base.version_id,
                             read_enc=Encryption(Mode.SSE_C, sse_c_key=scope.sse_c_key))
    except WrongKeyError:
        return record
    except FatalError:
        raise
    except RekeyError as exc:
        return dataclasses.replace(record, error=exc.message)
    return dataclasses.replace(record, sse_c_key_md5=head.encryption.key_md5 or scope.sse_c_key.md5_b64)


async def _resolve_instruction_envelopes(s3: S3, scope: AuditScope, records: list[AuditRecord]) -> None:
    """Objects whose envelope lives in `<key>.instruction`: read the file, record format and wrapping."""
    instructions = {r.key[:-len(INSTRUCTION_SUFFIX)] for r in records
                    if r.is_latest and r.instruction_file and r.error is None and r.size <= INSTRUCTION_FILE_MAX}
    for i, rec in enumerate(records):
        if not rec.is_latest or rec.key not in instructions or rec.instruction_file or rec.error:
            continue
        if rec.mode == Mode.CSE and rec.cse_wrap != "instruction-file":
            continue
        try:
            head = await s3.head(scope.bucket, rec.key)
            body = (await s3.get(scope.bucket, rec.key + INSTRUCTION_SUFFIX)).data
            env = parse_envelope(head.metadata, load_instruction_file(body))
        except FatalError:
            raise
        except RekeyError:
            continue  # not a client-side object after all (or unreadable): keep what HEAD said
        records[i] = dataclasses.replace(rec, mode=Mode.CSE, kms_key_id=None, sse_c_key_md5=None,
                                         cse_format=env.format.value, cse_wrap=env.wrap_alg.value)


async def audit_objects(scope: AuditScope) -> tuple[list[AuditRecord], int]:
    """Every listed object classified (bounded concurrency), and the number of delete markers."""
    records: list[AuditRecord] = []
    delete_markers: list[str] = []
    send, receive = anyio.create_memory_object_stream[Listed](scope.concurrency * 2)
    async with S3.open(scope.endpoint, retry=retrier_for()) as s3:

        async def lister() -> None:
            async with send:
                async for item in _listed(s3, scope, delete_markers):
                    await send.send(item)

        async def worker() -> None:
            async for item in receive:
                records.append(await inspect(s3, scope, item))

        async with receive, anyio.create_task_group() as tg:  # receive closes after the workers end
            tg.start_soon(lister)
            for _ in range(scope.concurrency):
                tg.start_soon(worker)
        await _resolve_instruction_envelopes(s3, scope, records)
    records.sort(key=lambda r: (r.key, not r.is_latest, r.version_id or ""))
    return records, len(delete_markers)


# --- summary -----------------------------------------------------------------------------------------------


def target_mismatch(rec: AuditRecord, target: Target) -> str | None:
    """Why an object is not in the target state (None when it is). No key material in the text."""
    if target.mode == Mode.CSE and target.cse is not None:
        wanted = f"cse {target.cse.format}/{target.cse.keyring.value}"
        if rec.mode != Mode.CSE:
            return f"{rec.mode.value}, wanted {wanted}"
        if rec.cse_format != target.cse.format or rec.cse_wrap not in _WRAPS_BY_KEYRING[target.cse.keyring.value]:
            return f"cse {rec.cse_format}/{rec.cse_wrap}, wanted {wanted}"
        return None
    if rec.mode == Mode.CSE:
        return f"client-side encrypted ({rec.cse_format}/{rec.cse_wrap}), wanted {target.mode.value}"
    if rec.mode == Mode.SSE_C and rec.sse_c_key_md5 is None:
        return "sse-c with a key rekey could not check" if target.mode == Mode.SSE_C else \
            f"sse-c, wanted {target.mode.value}"
    seen = Encryption(rec.mode, kms_key_id=rec.kms_key_id, sse_c_key_md5=rec.sse_c_key_md5)
    return sse.mismatch(seen, target.encryption)


def _counts(records: Iterable[AuditRecord]) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, dict[str, int]]]]:
    by_mode = {m: {"objects": 0, "bytes": 0} for m in MODES}
    by_key: dict[str, dict[str, dict[str, int]]] = {m.value: {} for m in _KEYED_MODES}
    for rec in records:
        by_mode[rec.mode.value]["objects"] += 1
        by_mode[rec.mode.value]["bytes"] += rec.size
        label = rec.key_label()
        if label is not None:
            slot = by_key[rec.mode.value].setdefault(label, {"objects": 0, "bytes": 0})
            slot["objects"] += 1
            slot["bytes"] += rec.size
    return by_mode, by_key


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 100.0


def summarize(scope: AuditScope, records: list[AuditRecord], delete_markers: int, *,
              notes: Iterable[str] = ()) -> dict[str, Any]:
    """The audit as JSON: the schema scripts rely on (every mode name always present)."""
    counted = [r for r in records if r.error is None and not r.instruction_file]
    latest = [r for r in counted if r.is_latest]
    older = [r for r in counted if not r.is_latest]
    instructions = [r for r in records if r.error is None and r.instruction_file]
    by_mode, by_key = _counts(latest)
    old_mode, old_key = _counts(older)
    target = scope.target
    missing: list[dict[str, Any]] = []
    old_missing = 0
    if target is not None:
        for rec in latest:
            reason = target_mismatch(rec, target)
            if reason:
                missing.append({"key": rec.key, "version_id": rec.version_id, "mode": rec.mode.value,
                                "size": rec.size, "reason": reason})
        old_missing = sum(1 for rec in older if target_mismatch(rec, target))
    total_bytes = sum(r.size for r in latest)
    missing_bytes = sum(int(m["size"]) for m in missing)
    return {
        "bucket": scope.bucket,
        "prefix": scope.key_filter.prefix,
        "endpoint_url": scope.endpoint.endpoint_url,
        "target": _describe(target),
        "objects": len(latest),
        "bytes": total_bytes,
        "by_mode": by_mode,
        "by_key": by_key,
        "instruction_files": {"objects": len(instructions), "bytes": sum(r.size for r in instructions)},
        "in_target": None if target is None else {
            "objects": len(latest) - len(missing), "bytes": total_bytes - missing_bytes,
            "percent_objects": _percent(len(latest) - len(missing), len(latest)),
            "percent_bytes": _percent(total_bytes - missing_bytes, total_bytes)},
        "not_in_target": missing,
        "noncurrent": {"audited": scope.versions, "objects": len(older), "bytes": sum(r.size for r in older),
                       "by_mode": old_mode, "by_key": old_key, "delete_markers": delete_markers,
                       "not_in_target": old_missing if target is not None else None},
        "errors": [{"key": r.key, "version_id": r.version_id, "error": r.error} for r in records if r.error],
        "notes": list(notes),
    }


def _describe(target: Target | None) -> str | None:
    if target is None:
        return None
    if target.mode == Mode.CSE and target.cse:
        return f"cse ({target.cse.format}, {target.cse.keyring.value})"
    if target.mode in (Mode.SSE_KMS, Mode.DSSE_KMS):
        return f"{target.mode.value} ({target.encryption.kms_key_id})"
    if target.mode == Mode.SSE_C:
        return f"sse-c (key MD5 {target.encryption.key_md5})"
    return target.mode.value


def table_text(summary: Mapping[str, Any]) -> str:
    lines = [f"s3://{summary['bucket']}/{summary['prefix']}"
             + (f"   target: {summary['target']}" if summary["target"] else "")]
    lines += _mode_table(summary["by_mode"], summary["by_key"], int(summary["bytes"]))
    ins = summary["instruction_files"]
    if ins["objects"]:
        lines.append(f"instruction files (counted apart): {ins['objects']} objects, {human_bytes(ins['bytes'])}")
    if summary["in_target"] is not None:
        it = summary["in_target"]
        lines.append(f"in target: {it['objects']} of {summary['objects']} objects ({it['percent_objects']}%), "
                     f"{human_bytes(it['bytes'])} of {human_bytes(summary['bytes'])} ({it['percent_bytes']}%)")
        missing = summary["not_in_target"]
        if missing:
            lines.append(f"not in target ({len(missing)}; first {min(len(missing), _NOT_IN_TARGET_SHOWN)}):")
            lines += [f"  {shown(m['key'])}: {shown(m['reason'])}" for m in missing[:_NOT_IN_TARGET_SHOWN]]
    old = summary["noncurrent"]
    if old["audited"]:
        lines.append(f"noncurrent versions: {old['objects']} versions, {human_bytes(old['bytes'])}, "
                     f"{old['delete_markers']} delete markers"
                     + (f", {old['not_in_target']} not in target" if old["not_in_target"] is not None else ""))
        lines += ["  " + line for line in _mode_table(old["by_mode"], old["by_key"], int(old["bytes"]))]
    for err in summary["errors"][:_NOT_IN_TARGET_SHOWN]:
        lines.append(f"could not audit {shown(err['key'])}: {shown(err['error'])}")
    lines += [f"note: {n}" for n in summary["notes"]]
    return "\n".join(lines)


def _mode_table(by_mode: Mapping[str, Any], by_key: Mapping[str, Any], total: int) -> list[str]:
    lines = [f"{'mode':<10} {'objects':>9} {'bytes':>14} {'% bytes':>8}"]
    for mode in MODES:
        row = by_mode[mode]
        lines.append(f"{mode:<10} {row['objects']:>9} {row['bytes']:>14} {_percent(row['bytes'], total):>7}%"
                     if total else f"{mode:<10} {row['objects']:>9} {row['bytes']:>14} {'-':>8}")
        for label, slot in sorted(by_key.get(mode, {}).items()):
            lines.append(f"  {label}: {slot['objects']} objects, {slot['bytes']} bytes")
    return lines


def write_csv(records: Iterable[AuditRecord], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rec in records:
        if rec.error is None:
            writer.writerow(rec.csv_row())


# --- chart -------------------------------------------------------------------------------------------------


def _read_audit_json(path: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        bytes_by_mode(data)
        return data
    except (OSError, ValueError) as exc:
        raise ConfigError(f"audit: cannot read audit JSON {path}: {exc}") from None


def _series(label: str, audit: Mapping[str, Any], color: tuple[int, int, int]) -> Series:
    return Series(label, bytes_by_mode(audit), color, bytes_by_mode(audit, "objects"))


def write_chart(path: str, *, before: str | None, after: str | None, current: Mapping[str, Any] | None) -> None:
    """Before/after from two audit files, or from one file and this audit, or this audit alone."""
    audits: list[tuple[str, Mapping[str, Any], tuple[int, int, int]]] = []
    if before:
        audits.append(("before", _read_audit_json(before), BEFORE_COLOR))
    if after:
        audits.append(("after", _read_audit_json(after), AFTER_COLOR))
    elif current is not None:
        audits.append(("after" if before else "now", current, AFTER_COLOR))
    if not audits:
        raise ConfigError("audit.chart: nothing to draw (give --before/--after or audit a bucket)")
    last = audits[-1][1]
    where = f"{last.get('bucket') or ''}/{last.get('prefix') or ''}".strip("/")
    title = f"{where}: bytes per mode" if where else "bytes per mode"
    Path(path).write_bytes(bar_chart([_series(*a) for a in audits], title=title))


# --- command -----------------------------------------------------------------------------------------------


def scope_from_args(args: argparse.Namespace) -> AuditScope:
    """From `-c FILE` (source, or destination with --destination) and/or flags; flags override the file."""
    config: Config | None = load_config(args.config) if args.config else None
    if config is None and not args.bucket:
        raise ConfigError("audit: give -c FILE or --bucket")
    if config is not None:
        place = config.destination if args.destination else config.source
        endpoint, location = place.endpoint, place.location
        key_filter = KeyFilter(location.prefix, (), ()) if args.destination else KeyFilter.from_config(config)
        bucket, sse_c_key, target = location.bucket, config.source.sse_c_key, config.target
    else:
        endpoint, key_filter, bucket, sse_c_key, target = Endpoint(), KeyFilter("", (), ()), "", None, None
    if args.destination and target is not None and target.mode == Mode.SSE_C:
        sse_c_key = target.encryption.sse_c_key  # the destination's objects are under the target key
    overrides = {k: v for k, v in (("endpoint_url", args.endpoint_url), ("ca_bundle", args.ca_bundle),
                                   ("region", args.region)) if v}
    endpoint = dataclasses.replace(endpoint, max_connections=args.concurrency + 8, **overrides)
    if args.prefix is not None:
        key_filter = dataclasses.replace(key_filter, prefix=args.prefix)
    return AuditScope(endpoint=endpoint, bucket=args.bucket or bucket, key_filter=key_filter,
                      sse_c_key=sse_c_key, target=target, versions=args.versions, concurrency=args.concurrency)
