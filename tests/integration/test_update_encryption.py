"""UpdateObjectEncryption: the request matches botocore's S3 API model, and SeaweedFS is never trusted with it.

SeaweedFS 4.48 (and moto 5) answer `PUT /bucket/key?encryption` with 200 and store the XML body as the
object's data: the probe must see that on a scratch key, and rekey must then copy instead.
"""

from __future__ import annotations

from typing import Any

import anyio
import botocore.session
import pytest
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters

from engine.sandbox import SandboxInfo
from tests.cli_helpers import list_keys
from workers.capabilities import Capabilities, LocalCapabilities
from workers.errors import VerifyError
from workers.job import Hooks, Job
from workers.model import Encryption, Location, Mode, ObjectHead, ObjectRef
from workers.s3 import S3, Endpoint
from workers.s3.convert import update_encryption_params
from workers.update_encryption import (
    CAP_UPDATE_ENCRYPTION,
    probe_update_encryption,
    update_object_encryption,
    why_not_applicable,
)

ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TARGET = Encryption(Mode.SSE_KMS, kms_key_id=ARN, bucket_key=True)


def model() -> Any:
    return botocore.session.get_session().get_service_model("s3").operation_model("UpdateObjectEncryption")


@pytest.mark.parametrize("version_id", [None, "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"])
def test_request_passes_botocore_validation_and_serialises_as_the_api_says(version_id: str | None) -> None:
    op = model()
    params = update_encryption_params("bucket", "dir/a b.txt", kms_key_arn=ARN, bucket_key=True,
                                      version_id=version_id)
    validate_parameters(params, op.input_shape)    # raises ParamValidationError on any mismatch
    session = botocore.session.get_session()
    client = session.create_client("s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    request = client._serializer.serialize_to_request(params, op)
    assert request["method"] == "PUT"
    assert request["url_path"] == "/bucket/dir/a%20b.txt?encryption"
    body = request["body"].decode()
    assert f"<SSE-KMS><KMSKeyArn>{ARN}</KMSKeyArn><BucketKeyEnabled>true</BucketKeyEnabled></SSE-KMS>" in body
    assert request["query_string"] == ({"versionId": version_id} if version_id else {})


def test_validation_catches_a_malformed_request() -> None:
    """The check above can fail: botocore refuses the shape rekey would get wrong."""
    with pytest.raises(ParamValidationError):
        validate_parameters({"Bucket": "b", "Key": "k", "ObjectEncryption": {"SSEKMS": {}}}, model().input_shape)


@pytest.mark.parametrize(("source", "target", "in_place", "why"), [
    (Mode.SSE_S3, TARGET, True, None),
    (Mode.SSE_KMS, TARGET, True, None),
    (Mode.NONE, TARGET, True, "only from SSE-S3 or SSE-KMS"),
    (Mode.SSE_C, TARGET, True, "only from SSE-S3 or SSE-KMS"),
    (Mode.DSSE_KMS, TARGET, True, "only from SSE-S3 or SSE-KMS"),
    (Mode.SSE_S3, Encryption(Mode.SSE_S3), True, "only to SSE-KMS"),
    (Mode.SSE_S3, TARGET, False, "only in place"),
    (Mode.SSE_S3, Encryption(Mode.SSE_KMS, kms_key_id="1234abcd-12ab"), True, "full key ARN"),
    (Mode.SSE_S3, Encryption(Mode.SSE_KMS, kms_key_id="alias/x"), True, "full key ARN"),
    (Mode.SSE_S3, Encryption(Mode.SSE_KMS, kms_key_id=ARN, context={"a": "b"}), True, "encryption context"),
])
def test_when_it_applies(source: Mode, target: Encryption, in_place: bool, why: str | None) -> None:
    got = why_not_applicable(Encryption(source), target, in_place=in_place)
    assert (got is None) if why is None else (why in (got or ""))


def Caps(**values: bool) -> LocalCapabilities:
    """In-memory capabilities, in the form the checkpoint keeps them."""
    return LocalCapabilities(Capabilities.from_flags(values))




def _run(info: SandboxInfo, fn: Any) -> Any:
    async def main() -> Any:
        async with S3.open(Endpoint(endpoint_url=info.s3_http, region=info.region)) as s3:
            return await fn(s3)
    return anyio.run(main)


def test_probe_on_seaweedfs_sees_the_overwrite_and_cleans_up(sandbox: SandboxInfo, s3_http: Any,
                                                             bucket: str) -> None:
    why = _run(sandbox, lambda s3: probe_update_encryption(s3, bucket, "p/", TARGET))
    assert why is not None and "does not implement UpdateObjectEncryption" in why
    assert list_keys(s3_http, bucket) == []


def test_probe_cleans_up_every_version_on_a_versioned_bucket(sandbox: SandboxInfo, s3_http: Any,
                                                             bucket: str) -> None:
    s3_http.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert _run(sandbox, lambda s3: probe_update_encryption(s3, bucket, "", TARGET)) is not None
    assert s3_http.list_object_versions(Bucket=bucket).get("Versions", []) == []


def _object(s3_http: Any, bucket: str) -> tuple[ObjectRef, ObjectHead, bytes]:
    body = b"precious data " * 100
    s3_http.put_object(Bucket=bucket, Key="obj", Body=body, ServerSideEncryption="AES256")
    h = s3_http.head_object(Bucket=bucket, Key="obj")
    head = ObjectHead("obj", len(body), h["ETag"], Encryption(Mode.SSE_S3))
    return ObjectRef("obj", len(body), h["ETag"]), head, body


def _job(s3: S3, bucket: str, caps: LocalCapabilities) -> Job:
    return Job.of(source=s3, dest=s3, src=Location(bucket), dst=Location(bucket), in_place=True, same_endpoint=True,
               target=TARGET, hooks=Hooks(caps=caps))


def test_fallback_to_copy_sends_nothing_to_an_endpoint_not_probed(sandbox: SandboxInfo, s3_http: Any,
                                                                  bucket: str) -> None:
    ref, head, body = _object(s3_http, bucket)
    for caps in (Caps(), Caps(**{CAP_UPDATE_ENCRYPTION: False})):
        sent = _run(sandbox, lambda s3, c=caps: update_object_encryption(_job(s3, bucket, c), ref, head))
        assert sent is False
    assert s3_http.get_object(Bucket=bucket, Key="obj")["Body"].read() == body   # untouched


def test_an_endpoint_that_stores_the_request_is_caught_and_unlearned(sandbox: SandboxInfo, s3_http: Any,
                                                                     bucket: str) -> None:
    """Were the capability wrongly set, the ETag SeaweedFS answers with gives it away (on a scratch bucket)."""
    ref, head, _ = _object(s3_http, bucket)
    caps = Caps(**{CAP_UPDATE_ENCRYPTION: True})
    with pytest.raises(VerifyError, match="stored the request"):
        _run(sandbox, lambda s3: update_object_encryption(_job(s3, bucket, caps), ref, head))
    assert caps.current.update_encryption is False
