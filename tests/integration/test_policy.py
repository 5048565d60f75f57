"""`rekey policy --apply` / `--restore` against SeaweedFS: enforcement, merge, checks, exact restore."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from engine.cli import main
from engine.sandbox import SandboxInfo

ALICE = {"Sid": "AllowAliceRead", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/alice"},
         "Action": "s3:GetObject", "Resource": "arn:aws:s3:::BUCKET/*"}


def write_config(tmp_path: Path, bucket: str, endpoint: str, target: str, *, ca_bundle: str | None = None,
                 kms_url: str | None = None) -> str:
    lines = ["[source]", f'bucket = "{bucket}"', f'endpoint_url = "{endpoint}"']
    if ca_bundle:
        lines.append(f'ca_bundle = "{ca_bundle}"')
    lines += ["[target]", target]
    if kms_url:
        lines += ["[kms]", f'endpoint_url = "{kms_url}"']
    path = tmp_path / "policy.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def status(call: Any) -> int:
    with pytest.raises(ClientError) as exc:
        call()
    return int(exc.value.response["ResponseMetadata"]["HTTPStatusCode"])


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_apply_enforces_sse_kms_keeps_other_statements_and_restores_exactly(
        s3: Any, s3_http: Any, kms: Any, bucket: str, kms_key: str, sandbox: SandboxInfo, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    key_arn = kms.describe_key(KeyId=kms_key)["KeyMetadata"]["Arn"]
    alice = {**ALICE, "Resource": f"arn:aws:s3:::{bucket}/*"}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [alice]}))
    previous = s3.get_bucket_policy(Bucket=bucket)["Policy"]
    cfg = write_config(tmp_path, bucket, sandbox.s3_https, f'mode = "sse-kms"\nkms_key_id = "{kms_key}"',
                       ca_bundle=sandbox.ca_bundle, kms_url=sandbox.kms_url)
    saved = tmp_path / "saved.json"

    code, out, err = run_cli(capsys, "policy", "-c", cfg, "--apply", "--save-previous", str(saved))

    assert code == 0, err
    assert "check plaintext-put-denied: ok" in err and "check compliant-put-accepted: ok" in err
    printed = json.loads(out)
    sids = {s["Sid"]: s for s in printed["policy"]["Statement"]}
    assert sids["rekey-deny-wrong-kms-key"]["Condition"]["StringNotEquals"][
        "s3:x-amz-server-side-encryption-aws-kms-key-id"] == [kms_key, key_arn]
    assert json.loads(saved.read_text())["policy"] == previous

    # Plaintext and the wrong mode are denied; the target key is accepted by id and by ARN.
    assert status(lambda: s3.put_object(Bucket=bucket, Key="plain", Body=b"x")) == 403
    assert status(lambda: s3.put_object(Bucket=bucket, Key="s3", Body=b"x", ServerSideEncryption="AES256")) == 403
    s3.put_object(Bucket=bucket, Key="by-id", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key)
    s3.put_object(Bucket=bucket, Key="by-arn", Body=b"x", ServerSideEncryption="aws:kms", SSEKMSKeyId=key_arn)
    # The TLS deny, applied over HTTPS, shuts plain HTTP out entirely (SeaweedFS evaluates aws:SecureTransport).
    assert status(lambda: s3_http.list_objects_v2(Bucket=bucket)) == 403
    statements = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert alice in statements
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0][
        "ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"] == kms_key

    # Applying again replaces rekey's statements instead of piling them up.
    code, _, err = run_cli(capsys, "policy", "-c", cfg, "--apply", "--save-previous", str(tmp_path / "again.json"))
    assert code == 0, err
    again = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    assert len(again) == len(statements)

    code, out, err = run_cli(capsys, "policy", "-c", cfg, "--restore", str(saved))

    assert code == 0, err
    assert s3.get_bucket_policy(Bucket=bucket)["Policy"] == previous
    assert status(lambda: s3.get_bucket_encryption(Bucket=bucket)) == 404
    s3_http.put_object(Bucket=bucket, Key="plain", Body=b"x")  # HTTP and plaintext allowed again


def test_apply_over_plain_http_leaves_tls_out_and_restores_no_policy(
        s3_http: Any, bucket: str, sandbox: SandboxInfo, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, bucket, sandbox.s3_http, 'mode = "sse-s3"')
    saved = tmp_path / "saved.json"

    code, out, _ = run_cli(capsys, "policy", "-c", cfg)  # print only: nothing changes
    assert code == 0 and "rekey-deny-wrong-encryption" in out
    assert status(lambda: s3_http.get_bucket_policy(Bucket=bucket)) == 404

    code, out, err = run_cli(capsys, "policy", "-c", cfg, "--apply", "--save-previous", str(saved))

    assert code == 0, err
    printed = json.loads(out)
    assert "rekey-deny-insecure-transport" not in {s["Sid"] for s in printed["policy"]["Statement"]}
    assert any("plain HTTP" in n for n in printed["notes"])
    assert json.loads(saved.read_text())["policy"] is None
    assert status(lambda: s3_http.put_object(Bucket=bucket, Key="plain", Body=b"x")) == 403
    s3_http.put_object(Bucket=bucket, Key="ok", Body=b"x", ServerSideEncryption="AES256")

    code, _, err = run_cli(capsys, "policy", "-c", cfg, "--restore", str(saved))

    assert code == 0, err
    assert status(lambda: s3_http.get_bucket_policy(Bucket=bucket)) == 404
    s3_http.put_object(Bucket=bucket, Key="plain", Body=b"x")


def test_a_failed_check_exits_1_dsse_is_stored_as_plaintext_on_seaweedfs(
        s3: Any, bucket: str, kms_key: str, sandbox: SandboxInfo, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, bucket, sandbox.s3_https, f'mode = "dsse-kms"\nkms_key_id = "{kms_key}"',
                       ca_bundle=sandbox.ca_bundle)
    saved = tmp_path / "saved.json"

    code, _, err = run_cli(capsys, "policy", "-c", cfg, "--apply", "--save-previous", str(saved))

    assert code == 1
    assert "check default-encryption: FAILED: PutBucketEncryption refused" in err
    assert "check compliant-put-accepted: FAILED: accepted but stored wrongly" in err
    assert "check plaintext-put-denied: ok" in err
    assert run_cli(capsys, "policy", "-c", cfg, "--restore", str(saved))[0] == 0
    assert not [o for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]  # scratch objects removed
