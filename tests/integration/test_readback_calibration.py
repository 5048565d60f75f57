"""Read-back calibration catches a server that answers 200, reports the right encryption and leaves data that
does not decrypt: SeaweedFS's UploadPartCopy into SSE-C, with the probe that normally keeps rekey away from it
pretended passed (as a server with an intermittent bug, or one the probe does not catch, would look).

In place, the multipart object's first write goes through that path; reading it back fails, the path is turned
off (`readback_<path>` = False), and the object is written again from the source bytes held for the check:
it reads back right under the target key, with its tags. A trusted path is not read back again.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import anyio

from engine.sandbox import SandboxInfo
from tests.cli_helpers import MiB, head, sse_c_md5, tags_of
from tests.helpers import read_back, sse_c_params
from workers.capabilities import Capabilities, LocalCapabilities
from workers.core.migrate import migrate_object
from workers.job import Hooks, Job
from workers.model import Encryption, Location, Mode, ObjectRef, SecretKey, State
from workers.readback import CAP_READBACK
from workers.s3 import S3, Endpoint

PATH = "none_to_sse-c_multipart-copy_in-place"


def Caps(**values: bool) -> LocalCapabilities:
    """The capability record as the engine keeps it, pre-seeded with what a probe said."""
    return LocalCapabilities(Capabilities.from_flags(values))




def migrate(info: SandboxInfo, bucket: str, keys: list[str], target: Encryption, caps: LocalCapabilities) -> list[Any]:
    async def main() -> list[Any]:
        endpoint = Endpoint(endpoint_url=info.s3_https, region=info.region, ca_bundle=info.ca_bundle)
        async with S3.open(endpoint) as s3:
            job = Job.of(source=s3, dest=s3, src=Location(bucket), dst=Location(bucket), in_place=True,
                         same_endpoint=True, target=target, part_size=5 * MiB, multipart_threshold=5 * MiB,
                         hooks=Hooks(caps=caps))
            out = []
            for key in keys:   # one at a time: the first decides the path for the second
                out.append(await migrate_object(job, ObjectRef(key, 0, "")))
            return out
    return anyio.run(main)


def test_a_path_that_does_not_read_back_is_turned_off_and_the_object_rewritten(
        sandbox: SandboxInfo, s3: Any, bucket: str) -> None:
    raw = os.urandom(32)
    target = Encryption(Mode.SSE_C, sse_c_key=SecretKey(raw))
    bodies = {f"big-{i}.bin": os.urandom(6 * MiB + 11) for i in range(2)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, Tagging="keep=me", Metadata={"m": key})
    caps = Caps(upload_part_copy_into_sse_c=True)   # the probe "passed"

    outcomes = migrate(sandbox, bucket, sorted(bodies), target, caps)

    assert caps.current.get(CAP_READBACK.format(path=PATH)) is False, caps.current.to_flags()
    assert [(o.state, o.action.value) for o in outcomes] == [(State.DONE, "stream")] * 2, outcomes
    for key, body in bodies.items():
        h = head(s3, bucket, key, raw)
        assert (h["SSECustomerAlgorithm"], h["SSECustomerKeyMD5"].split(",")[0]) == ("AES256", sse_c_md5(raw))
        assert hashlib.sha256(read_back(s3, bucket, key, raw)).digest() == hashlib.sha256(body).digest(), key
        assert tags_of(s3, bucket, key) == {"keep": "me"} and h["Metadata"] == {"m": key}
        assert s3.get_object(Bucket=bucket, Key=key, **sse_c_params(raw))["ContentLength"] == len(body)


def test_a_path_is_trusted_after_its_first_objects_read_back(sandbox: SandboxInfo, s3: Any, bucket: str,
                                                             kms_key: str) -> None:
    bodies = {f"small-{i}.bin": os.urandom(4096 + i) for i in range(3)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    caps = Caps()

    outcomes = migrate(sandbox, bucket, sorted(bodies), Encryption(Mode.SSE_KMS, kms_key_id=kms_key), caps)

    assert [o.state for o in outcomes] == [State.DONE] * 3
    path = f"none_to_sse-kms_{outcomes[0].action.value}_in-place"
    assert caps.current.get(CAP_READBACK.format(path=path)) is True, caps.current.to_flags()
    for key, body in bodies.items():
        assert read_back(s3, bucket, key) == body
