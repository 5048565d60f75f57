"""The bucket policy and default encryption `rekey policy` builds for each target mode, and the merge."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from engine.config import Target, parse_config
from engine.policy import build_plan, default_encryption, kms_key_spellings, merge_policy

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:us-east-1:111122223333:key/{KEY_ID}"


def target(tmp_path: Path, **fields: Any) -> Target:
    if fields.get("mode") == "sse-c":
        key = tmp_path / "c.key"
        key.write_bytes(os.urandom(32))
        fields["sse_c_key_file"] = str(key)
    return parse_config({"source": {"bucket": "b"}, "target": fields}, base=tmp_path).target


def by_sid(statements: Any) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in statements}


def test_every_statement_is_a_deny_with_the_rekey_prefix(tmp_path: Path) -> None:
    for fields in ({"mode": "sse-s3"}, {"mode": "sse-kms", "kms_key_id": KEY_ID}, {"mode": "sse-c"},
                   {"mode": "dsse-kms", "kms_key_id": KEY_ID}, {"mode": "cse", "keyring": "kms", "kms_key_id": KEY_ID}):
        plan = build_plan("b", "", target(tmp_path, **fields))
        assert plan.statements
        assert all(s["Sid"].startswith("rekey-") and s["Effect"] == "Deny" for s in plan.statements)
        tls = by_sid(plan.statements)["rekey-deny-insecure-transport"]
        assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert tls["Resource"] == ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]


def test_sse_s3_denies_a_missing_or_different_header(tmp_path: Path) -> None:
    plan = build_plan("b", "data/", target(tmp_path, mode="sse-s3"))

    st = by_sid(plan.statements)
    assert set(st) == {"rekey-deny-insecure-transport", "rekey-deny-unencrypted-put", "rekey-deny-wrong-encryption"}
    assert st["rekey-deny-unencrypted-put"]["Condition"] == {"Null": {"s3:x-amz-server-side-encryption": "true"}}
    assert st["rekey-deny-wrong-encryption"]["Condition"] == {
        "StringNotEquals": {"s3:x-amz-server-side-encryption": "AES256"}}
    assert st["rekey-deny-wrong-encryption"]["Action"] == "s3:PutObject"
    assert st["rekey-deny-wrong-encryption"]["Resource"] == "arn:aws:s3:::b/data/*"
    assert plan.encryption == {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}


def test_sse_kms_names_the_key_in_every_spelling(tmp_path: Path) -> None:
    t = target(tmp_path, mode="sse-kms", kms_key_id=KEY_ID, bucket_key=True)

    plan = build_plan("b", "", t, kms_key_ids=kms_key_spellings(KEY_ID, KEY_ARN))

    st = by_sid(plan.statements)
    assert st["rekey-deny-wrong-encryption"]["Condition"]["StringNotEquals"] == {
        "s3:x-amz-server-side-encryption": "aws:kms"}
    assert st["rekey-deny-wrong-kms-key"]["Condition"] == {
        "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": [KEY_ID, KEY_ARN]}}
    assert plan.encryption == {"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_ID},
        "BucketKeyEnabled": True}]}


def test_an_arn_in_the_config_also_allows_the_bare_id() -> None:
    assert kms_key_spellings(KEY_ARN) == [KEY_ARN, KEY_ID]
    assert kms_key_spellings(KEY_ID) == [KEY_ID]


def test_dsse_kms_uses_its_own_header_value(tmp_path: Path) -> None:
    plan = build_plan("b", "", target(tmp_path, mode="dsse-kms", kms_key_id=KEY_ID))

    st = by_sid(plan.statements)
    assert st["rekey-deny-wrong-encryption"]["Condition"]["StringNotEquals"] == {
        "s3:x-amz-server-side-encryption": "aws:kms:dsse"}
    assert st["rekey-deny-wrong-kms-key"]["Condition"]["StringNotEquals"] == {
        "s3:x-amz-server-side-encryption-aws-kms-key-id": KEY_ID}
    assert plan.encryption is not None
    assert plan.encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms:dsse"


def test_sse_c_requires_the_customer_algorithm_and_has_no_default(tmp_path: Path) -> None:
    plan = build_plan("b", "", target(tmp_path, mode="sse-c"))

    st = by_sid(plan.statements)
    assert set(st) == {"rekey-deny-insecure-transport", "rekey-deny-unencrypted-put"}
    assert st["rekey-deny-unencrypted-put"]["Condition"] == {
        "Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "true"}}
    assert plan.encryption is None
    assert default_encryption(target(tmp_path, mode="sse-c")) is None


def test_cse_gets_only_the_tls_deny_and_a_note(tmp_path: Path) -> None:
    plan = build_plan("b", "", target(tmp_path, mode="cse", keyring="kms", kms_key_id=KEY_ID))

    assert [s["Sid"] for s in plan.statements] == ["rekey-deny-insecure-transport"]
    assert plan.encryption is None
    assert any("cse target" in n for n in plan.notes)


def test_plain_http_leaves_the_tls_deny_out_and_says_why(tmp_path: Path) -> None:
    plan = build_plan("b", "", target(tmp_path, mode="sse-s3"), plain_http=True)

    assert "rekey-deny-insecure-transport" not in by_sid(plan.statements)
    assert any("plain HTTP" in n for n in plan.notes)


def test_partition_follows_the_region(tmp_path: Path) -> None:
    plan = build_plan("b", "", target(tmp_path, mode="sse-s3"), partition="aws-cn")
    assert by_sid(plan.statements)["rekey-deny-wrong-encryption"]["Resource"] == "arn:aws-cn:s3:::b/*"


def test_merge_keeps_others_in_place_and_replaces_same_sid() -> None:
    other = {"Sid": "AllowAlice", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:user/alice"},
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}
    unnamed = {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteBucket", "Resource": "arn:aws:s3:::b"}
    stale = {"Sid": "rekey-deny-wrong-encryption", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": "arn:aws:s3:::b/*", "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "x"}}}
    fresh = [dict(stale, Condition={"StringNotEquals": {"s3:x-amz-server-side-encryption": "AES256"}}),
             {"Sid": "rekey-deny-unencrypted-put", "Effect": "Deny"}]
    existing = {"Version": "2008-10-17", "Id": "keep", "Statement": [other, stale, unnamed]}

    merged = merge_policy(existing, fresh)

    assert merged["Version"] == "2008-10-17" and merged["Id"] == "keep"
    assert merged["Statement"] == [other, fresh[0], unnamed, fresh[1]]
    assert existing["Statement"] == [other, stale, unnamed]  # input untouched


def test_merge_accepts_a_single_statement_object_and_no_policy() -> None:
    one = {"Sid": "Only", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "x"}
    new = [{"Sid": "rekey-x", "Effect": "Deny"}]

    assert merge_policy({"Statement": one}, new)["Statement"] == [one, new[0]]
    assert merge_policy(None, new) == {"Version": "2012-10-17", "Statement": new}


@pytest.mark.parametrize("mode", ["sse-s3", "sse-kms"])
def test_document_is_json_serialisable(tmp_path: Path, mode: str) -> None:
    import json
    plan = build_plan("b", "", target(tmp_path, mode=mode, **({"kms_key_id": KEY_ID} if mode == "sse-kms" else {})))
    assert json.loads(json.dumps(plan.to_json()))["policy"]["Version"] == "2012-10-17"


def test_prefix_wildcards_and_variables_are_literal_in_the_resource() -> None:
    from engine.policy import enforcement_statements, resource_literal
    from workers.model import Encryption, Mode
    assert resource_literal("logs/*/a?b/${aws:username}/") == "logs/${*}/a${?}b/${$}{aws:username}/"
    assert resource_literal("plain/prefix/") == "plain/prefix/"
    target = Target(Mode.SSE_S3, Encryption(Mode.SSE_S3))
    resources = {s["Sid"]: s["Resource"] for s in enforcement_statements("b", "team*/?/${x}/", target)}
    assert resources["rekey-deny-wrong-encryption"] == "arn:aws:s3:::b/team${*}/${?}/${$}{x}/*"
