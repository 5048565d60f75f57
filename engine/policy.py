"""`rekey policy`: the bucket policy and default encryption that keep new writes in the target mode.

The document (every statement's Sid starts with "rekey-"):
- rekey-deny-insecure-transport: Deny s3:* when aws:SecureTransport is false (every target).
- rekey-deny-unencrypted-put: Deny s3:PutObject when the SSE header is absent (`Null`); for sse-c, when the
  customer-algorithm header is absent.
- rekey-deny-wrong-encryption: Deny s3:PutObject when s3:x-amz-server-side-encryption is not the target value.
- rekey-deny-wrong-kms-key: (sse-kms, dsse-kms) Deny s3:PutObject when
  s3:x-amz-server-side-encryption-aws-kms-key-id is not the target key.
- cse targets: only the TLS deny (client-side objects carry no SSE header; S3 cannot tell ciphertext).

KMS key id versus ARN: the condition compares the header as the writer sent it. AWS documents the ARN form for
this condition; SeaweedFS compares literally (a policy with the ARN denies a PUT naming the bare id, and the
reverse). So the condition lists every spelling rekey knows: the configured value, the bare id cut from an ARN,
and the ARN from KMS DescribeKey when a `[kms]` endpoint is configured. A writer naming the key by alias is
denied: write with the id or ARN.

Plain-HTTP endpoints: the TLS deny blocks every request over HTTP, this tool's own included (SeaweedFS
evaluates it: PutBucketPolicy, DeleteBucketPolicy and GetBucketPolicy over HTTP all answer 403 once it is in
place), so `--apply` through an http:// endpoint leaves it out and says so; apply through HTTPS to get it.

SeaweedFS (4.48) also judges CompleteMultipartUpload and AbortMultipartUpload as s3:PutObject without the SSE
header, so once the Null deny is in place no multipart upload can complete (or be aborted) there, rekey's own
included: migrate first, then apply. AWS judges UploadPart/Complete against the upload's own encryption.
SeaweedFS refuses PutBucketEncryption with aws:kms:dsse (the check reports it).

`--apply` saves the previous policy and default encryption to a file first, merges (statements with the same
Sid are replaced, all others kept in place), then checks by writing scratch objects. `--restore FILE` puts
back exactly what was saved (deleting the policy or default encryption when there was none).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import Config, Target
from engine.retry import retrier_for
from workers import sse
from workers.errors import ConfigError, FatalError, ObjectChangedError, RekeyError
from workers.model import Encryption, Mode
from workers.probes import probe_key
from workers.s3 import S3, Kms, PutRequest

SID_PREFIX = "rekey-"
POLICY_VERSION = "2012-10-17"
SAVED_FORMAT = "rekey-saved-bucket-policy/1"
_SSE_HEADER_VALUE = {Mode.SSE_S3: "AES256", Mode.SSE_KMS: "aws:kms", Mode.DSSE_KMS: "aws:kms:dsse"}


@dataclass(frozen=True, slots=True)
class PolicyPlan:
    """What `policy` would put on the bucket: rekey's statements, the default encryption, and notes."""

    bucket: str
    statements: tuple[dict[str, Any], ...]
    encryption: dict[str, Any] | None      # PutBucketEncryption's ServerSideEncryptionConfiguration
    notes: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        return {"Version": POLICY_VERSION, "Statement": [dict(s) for s in self.statements]}

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "policy": self.document(), "bucket_encryption": self.encryption,
                "notes": list(self.notes)}


@dataclass(frozen=True, slots=True)
class Check:
    """One post-apply check and its result."""

    name: str
    ok: bool
    detail: str


def partition_for(region: str | None) -> str:
    if region and region.startswith("cn-"):
        return "aws-cn"
    if region and region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def kms_key_spellings(key_id: str, arn: str | None = None) -> list[str]:
    """Every form of one KMS key a writer may send: as configured, bare id (from an ARN), ARN."""
    forms = [key_id]
    if key_id.startswith("arn:") and ":key/" in key_id:
        forms.append(key_id.rsplit(":key/", 1)[1])
    if arn:
        forms.append(arn)
    return list(dict.fromkeys(forms))


def _deny_put(sid: str, resource: str, condition: dict[str, Any]) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": resource,
            "Condition": condition}


def resource_literal(text: str) -> str:
    """A key prefix as literal text in a policy Resource: `*` and `?` are wildcards there and `${` starts a
    policy variable, so they are written as the variables `${*}`, `${?}` and `${$}` (policy version 2012-10-17)."""
    return text.replace("$", "${$}").replace("*", "${*}").replace("?", "${?}")


def enforcement_statements(bucket: str, prefix: str, target: Target, *, kms_key_ids: Sequence[str] = (),
                           include_tls: bool = True, partition: str = "aws") -> list[dict[str, Any]]:
    """The Deny statements enforcing `target` on new writes under `prefix` (and TLS on the whole bucket)."""
    bucket_arn = f"arn:{partition}:s3:::{bucket}"
    objects = f"{bucket_arn}/{resource_literal(prefix)}*"
    out: list[dict[str, Any]] = []
    if include_tls:
        out.append({"Sid": "rekey-deny-insecure-transport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}}})
    mode = target.mode
    if mode == Mode.SSE_C:
        out.append(_deny_put("rekey-deny-unencrypted-put", objects,
                             {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "true"}}))
    elif mode in _SSE_HEADER_VALUE:
        out.append(_deny_put("rekey-deny-unencrypted-put", objects,
                             {"Null": {"s3:x-amz-server-side-encryption": "true"}}))
        out.append(_deny_put("rekey-deny-wrong-encryption", objects,
                             {"StringNotEquals": {"s3:x-amz-server-side-encryption": _SSE_HEADER_VALUE[mode]}}))
        ids = list(kms_key_ids) or ([target.encryption.kms_key_id] if target.encryption.kms_key_id else [])
        if mode in (Mode.SSE_KMS, Mode.DSSE_KMS) and ids:
            value: str | list[str] = ids[0] if len(ids) == 1 else ids
            out.append(_deny_put("rekey-deny-wrong-kms-key", objects, {
                "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": value}}))
    return out


def default_encryption(target: Target) -> dict[str, Any] | None:
    """PutBucketEncryption's configuration for the target, or None where S3 has no such default."""
    mode = target.mode
    if mode not in _SSE_HEADER_VALUE:
        return None
    rule: dict[str, Any] = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": _SSE_HEADER_VALUE[mode]}}
    if mode in (Mode.SSE_KMS, Mode.DSSE_KMS) and target.encryption.kms_key_id:
        rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] = target.encryption.kms_key_id
    if mode == Mode.SSE_KMS and target.encryption.bucket_key is not None:
        rule["BucketKeyEnabled"] = target.encryption.bucket_key
    return {"Rules": [rule]}


def build_plan(bucket: str, prefix: str, target: Target, *, kms_key_ids: Sequence[str] = (),
               plain_http: bool = False, partition: str = "aws") -> PolicyPlan:
    notes: list[str] = []
    if plain_http:
        notes.append("rekey-deny-insecure-transport left out: the endpoint is plain HTTP and the statement "
                     "would deny every request through it, rekey's own (and --restore) included; "
                     "apply through an https:// endpoint to add it")
    if target.mode == Mode.CSE:
        notes.append("cse target: S3 cannot tell client-side ciphertext from plaintext, so only TLS is "
                     "enforced; audit with `rekey audit` to find objects written without the S3EC envelope")
    if target.mode == Mode.SSE_C:
        notes.append("sse-c target: no default bucket encryption can be SSE-C, and a policy cannot name the "
                     "customer key: any SSE-C key is allowed; audit key MD5s with `rekey audit`")
    if target.mode in (Mode.SSE_KMS, Mode.DSSE_KMS):
        notes.append("the KMS key condition matches the header as sent: write with the key id or ARN listed "
                     "(an alias is denied)")
    if target.mode == Mode.DSSE_KMS:
        notes.append("SeaweedFS accepts aws:kms:dsse and stores plaintext; the compliant-PUT check catches it")
    notes.append("policies judge the request headers, so a PUT without SSE headers is denied even though the "
                 "default bucket encryption would have encrypted it")
    statements = enforcement_statements(bucket, prefix, target, kms_key_ids=kms_key_ids,
                                        include_tls=not plain_http, partition=partition)
    return PolicyPlan(bucket, tuple(statements), default_encryption(target), tuple(notes))


def merge_policy(existing: Mapping[str, Any] | None, statements: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Existing statements kept in order; one with the same Sid as a new statement is replaced in place."""
    new_by_sid = {str(s["Sid"]): dict(s) for s in statements}
    merged: dict[str, Any] = dict(existing or {})
    merged.setdefault("Version", POLICY_VERSION)
    old = merged.get("Statement", [])
    old_list = [old] if isinstance(old, Mapping) else list(old)
    out: list[Any] = []
    placed: set[str] = set()
    for st in old_list:
        sid = st.get("Sid") if isinstance(st, Mapping) else None
        if isinstance(sid, str) and sid in new_by_sid:
            if sid not in placed:
                out.append(new_by_sid[sid])
                placed.add(sid)
            continue
        out.append(st)
    out += [s for sid, s in new_by_sid.items() if sid not in placed]
    merged["Statement"] = out
    return merged


# --- talking to the bucket ---------------------------------------------------------------------------------


async def read_policy(s3: S3, bucket: str) -> str | None:
    """The bucket policy's text exactly as the server returns it, or None when there is none."""
    return await s3.get_bucket_policy(bucket)


async def read_encryption(s3: S3, bucket: str) -> dict[str, Any] | None:
    return await s3.get_bucket_encryption(bucket)


def save_previous(path: Path, *, bucket: str, endpoint_url: str | None, policy: str | None,
                  encryption: dict[str, Any] | None) -> None:
    """Write the backup before anything changes; never overwrite an earlier backup."""
    data = {"format": SAVED_FORMAT, "bucket": bucket, "endpoint_url": endpoint_url,
            "saved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "policy": policy, "bucket_encryption": encryption}
    if policy is None:
        data["note"] = "the bucket had no bucket policy: --restore deletes the policy"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)  # owner only
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    except FileExistsError:
        raise ConfigError(f"policy.save_previous: {path} already exists (choose another path)") from None
    except OSError as exc:
        raise ConfigError(f"policy.save_previous: cannot write {path}: {exc.strerror}") from None


async def _attempt_put(s3: S3, bucket: str, key: str, enc: Encryption | None) -> tuple[bool, str]:
    """(accepted?, what the server said): a denial is the expected answer, not an error."""
    try:
        await s3.put(PutRequest(bucket, key, b"rekey policy check", encryption=enc))
        return True, "accepted"
    except FatalError:
        raise
    except RekeyError as exc:
        code = exc.code or type(exc).__name__
        return False, f"{code} ({exc.status})" if exc.status else code


async def _delete_quietly(s3: S3, bucket: str, key: str) -> None:
    try:
        await s3.delete(bucket, key)
    except RekeyError:
        pass


async def run_checks(s3: S3, plan: PolicyPlan, prefix: str, target: Target,
                     previous: Sequence[Mapping[str, Any]]) -> list[Check]:
    """Policy read back (rekey's and every earlier statement), a plaintext PUT (denied), a compliant PUT
    (accepted and stored in the target mode)."""
    bucket = plan.bucket
    checks: list[Check] = []
    now = _statements(await read_policy(s3, bucket))
    present = {st.get("Sid") for st in now}
    missing = [str(s["Sid"]) for s in plan.statements if s["Sid"] not in present]
    checks.append(Check("rekey-statements-present", not missing,
                        f"{len(plan.statements)} statement(s)" if not missing else f"missing: {', '.join(missing)}"))
    new_sids = {s["Sid"] for s in plan.statements}
    kept = [s for s in previous if s.get("Sid") not in new_sids]
    lost = [s for s in kept if not any(_same_statement(s, t) for t in now)]
    checks.append(Check("previous-statements-kept", not lost,
                        f"{len(kept)} earlier statement(s) kept" if not lost
                        else f"{len(lost)} earlier statement(s) missing after the merge"))
    if plan.encryption is not None:
        enc = await read_encryption(s3, bucket)
        checks.append(Check("default-encryption", enc is not None,
                            "set" if enc is not None else "GetBucketEncryption finds none"))
    if target.mode == Mode.CSE:
        checks.append(Check("plaintext-put-denied", True, "not applicable: a cse target sends no SSE header"))
    else:
        key = probe_key(prefix)
        accepted, said = await _attempt_put(s3, bucket, key, None)
        if accepted:
            await _delete_quietly(s3, bucket, key)
        checks.append(Check("plaintext-put-denied", not accepted,
                            f"PutObject without encryption: {said}" + (" (must be denied)" if accepted else "")))
    key = probe_key(prefix)
    accepted, said = await _attempt_put(s3, bucket, key, target.encryption)
    if not accepted:
        checks.append(Check("compliant-put-accepted", False, f"PutObject in the target mode: {said}"))
        return checks
    try:
        read = target.encryption if target.mode == Mode.SSE_C else None
        head = await s3.head(bucket, key, read_enc=read)
        why = sse.mismatch(head.encryption, target.encryption)
        checks.append(Check("compliant-put-accepted", why is None,
                            "accepted and stored in the target mode" if why is None
                            else f"accepted but stored wrongly: {why}"))
    finally:
        await _delete_quietly(s3, bucket, key)
    return checks


def _statements(text: str | None) -> list[Mapping[str, Any]]:
    if not text:
        return []
    try:
        doc = json.loads(text)
    except ValueError:
        raise ConfigError("policy: the bucket's current policy is not valid JSON; fix or remove it first") from None
    st = doc.get("Statement", []) if isinstance(doc, Mapping) else []
    return [st] if isinstance(st, Mapping) else [s for s in st if isinstance(s, Mapping)]


async def _kms_arn(config: Config) -> str | None:
    """The target key's ARN via KMS DescribeKey, only when a [kms] endpoint is configured (best effort)."""
    key_id = config.target.encryption.kms_key_id
    if config.kms is None or not key_id or key_id.startswith("arn:"):
        return None
    try:
        async with Kms.open(config.kms, retry=retrier_for()) as kms:
            return await kms.key_arn(key_id)
    except RekeyError:
        return None


async def plan_for(config: Config) -> PolicyPlan:
    dst = config.destination
    ids: list[str] = []
    if config.target.mode in (Mode.SSE_KMS, Mode.DSSE_KMS) and config.target.encryption.kms_key_id:
        ids = kms_key_spellings(config.target.encryption.kms_key_id, await _kms_arn(config))
    return build_plan(dst.location.bucket, dst.location.prefix, config.target, kms_key_ids=ids,
                      plain_http=dst.endpoint.is_plain_http, partition=partition_for(dst.endpoint.region))


async def apply_plan(config: Config, plan: PolicyPlan, save_path: Path) -> list[Check]:
    dst = config.destination
    bucket = plan.bucket
    async with S3.open(dst.endpoint, retry=retrier_for()) as s3:
        previous = await read_policy(s3, bucket)
        previous_enc = await read_encryption(s3, bucket)
        old_statements = _statements(previous)
        save_previous(save_path, bucket=bucket, endpoint_url=dst.endpoint.endpoint_url, policy=previous,
                      encryption=previous_enc)
        merged = merge_policy(json.loads(previous) if previous else None, plan.statements)
        await s3.put_bucket_policy(bucket, json.dumps(merged))
        refused: list[Check] = []
        if plan.encryption is not None:
            try:
                await s3.put_bucket_encryption(bucket, plan.encryption)
            except FatalError:
                raise
            except RekeyError as exc:  # e.g. SeaweedFS refuses aws:kms:dsse: the policy still stands, go on
                refused.append(Check("default-encryption", False, f"PutBucketEncryption refused: {exc.message}"))
        checks = await run_checks(s3, plan, dst.location.prefix, config.target, old_statements)
        return refused + [c for c in checks if not (refused and c.name == "default-encryption")]


def _same_statement(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal up to the one-item-list versus scalar spelling servers may normalise (Action, Resource)."""
    def norm(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return norm(v[0]) if len(v) == 1 else sorted(json.dumps(norm(x), sort_keys=True) for x in v)
        return v
    return bool(norm(a) == norm(b))


def load_saved(path: Path, bucket: str) -> dict[str, Any]:
    """A backup written by --apply, for the bucket the config names."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"policy.restore: cannot read {path}: {exc}") from None
    if not isinstance(saved, dict) or saved.get("format") != SAVED_FORMAT:
        raise ConfigError(f"policy.restore: {path} is not a file written by `rekey policy --apply`")
    if saved.get("bucket") != bucket:
        raise ConfigError(f"policy.restore: {path} was saved from bucket {saved.get('bucket')!r}, "
                          f"the config names {bucket!r}")
    return saved


async def restore(config: Config, saved: Mapping[str, Any]) -> list[str]:
    """Put back the saved policy and default encryption (or delete them when there were none)."""
    bucket = config.destination.location.bucket
    done: list[str] = []
    async with S3.open(config.destination.endpoint, retry=retrier_for()) as s3:
        if saved.get("policy") is None:
            await _absent_ok(s3.delete_bucket_policy(bucket))
            done.append("bucket policy deleted (there was none before)")
        else:
            await s3.put_bucket_policy(bucket, str(saved["policy"]))
            done.append("bucket policy restored")
        if saved.get("bucket_encryption") is None:
            await _absent_ok(s3.delete_bucket_encryption(bucket))
            done.append("default encryption deleted (there was none before)")
        else:
            await s3.put_bucket_encryption(bucket, saved["bucket_encryption"])
            done.append("default encryption restored")
    return done


async def _absent_ok(request: Awaitable[None]) -> None:
    try:
        await request
    except ObjectChangedError:  # 404: already absent (e.g. PutBucketEncryption had been refused)
        pass
