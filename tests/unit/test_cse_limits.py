"""An object over the GCM limit (2^36-32 bytes of plaintext) is refused for a client-side target before any I/O.

The S3 clients and the target keyring are fakes that fail the test on any use, so the only way these tests pass
is a refusal decided from the object's size alone: no GET, no upload, no KMS call. (An object within the limit
has its first GET and its tags asked beside the key wrap: the fakes record them and never answer.)
"""

from __future__ import annotations

from typing import Any, NoReturn

import anyio
import pytest

from workers.core.migrate import migrate_object
from workers.cse import GCM_MAX_PLAINTEXT, ContentEncryptor, CseFormat, Envelope, WrapAlg, WrappedKey, new_data_key
from workers.cse_transfer import transfer
from workers.errors import ObjectChangedError, ObjectError
from workers.job import CseSettings, Job
from workers.model import Encryption, Location, Mode, ObjectHead, ObjectRef, SecretKey, State

TAG = 16


class WrapReached(Exception):
    """Raised by the fake keyring: the size check let the object through to key wrapping."""


class NoDataS3:
    """An S3 client that fails the test on any call except the few a test allows explicitly."""

    def __init__(self, head: ObjectHead | None = None) -> None:
        self._head = head
        self.calls: list[str] = []

    async def head(self, bucket: str, key: str, **_: Any) -> ObjectHead:
        self.calls.append(f"head {key}")
        if key.endswith(".instruction"):  # no instruction file: 404, as a real server answers
            raise ObjectChangedError("not found", bucket=bucket, key=key, op="head_object")
        if self._head is None:
            pytest.fail(f"unexpected HeadObject {bucket}/{key}")
        return self._head

    async def get(self, bucket: str, key: str, **_: Any) -> NoReturn:
        self.calls.append(f"get {key}")
        if key.endswith(".instruction"):  # looking for an instruction file is metadata, not data: 404
            raise ObjectChangedError("not found", bucket=bucket, key=key, op="get_object")
        pytest.fail(f"object data read: {bucket}/{key}")

    async def get_range(self, bucket: str, key: str, *_: Any, **__: Any) -> NoReturn:
        self.calls.append(f"get_range {key}")
        await anyio.sleep_forever()
        raise AssertionError

    async def get_tags(self, bucket: str, key: str, *_: Any) -> NoReturn:
        self.calls.append(f"get_tags {key}")
        await anyio.sleep_forever()
        raise AssertionError

    def __getattr__(self, name: str) -> NoReturn:
        pytest.fail(f"S3 client used for {name} before the size was checked")


class TouchFreeKeyring:
    """A target keyring: wrapping means the object got past the size check."""

    fingerprint = "fake"

    def describe(self) -> str:
        return "fake"

    def can_unwrap(self, env: Envelope) -> bool:
        return False

    async def wrap(self, data_key: SecretKey, fmt: CseFormat) -> WrappedKey:
        raise WrapReached

    async def unwrap(self, env: Envelope) -> SecretKey:
        pytest.fail("unwrap called")


def make_job(s3: Any, *, target_format: CseFormat = CseFormat.V3, source: Any = None) -> Job:
    settings = CseSettings(target=TouchFreeKeyring(), target_format=target_format, source=source)  # type: ignore[arg-type]
    return Job.of(source=s3, dest=s3, src=Location("bucket"), dst=Location("bucket"), in_place=True,
               same_endpoint=True, target=Encryption(Mode.NONE), cse=settings)


def head_of(size: int, metadata: dict[str, str] | None = None) -> ObjectHead:
    return ObjectHead(key="huge.bin", size=size, etag='"abc"', encryption=Encryption(Mode.NONE),
                      metadata=metadata or {})


def v2_source_envelope() -> Envelope:
    enc = ContentEncryptor(new_data_key(), CseFormat.V2)
    return enc.envelope(WrappedKey(edk=b"\x01" * 60, wrap_alg=WrapAlg.AES_GCM, description={}))


def run_transfer(size: int, *, source_env: Envelope | None = None) -> list[str]:
    s3 = NoDataS3()
    job = make_job(s3)
    head = head_of(size)
    ref = ObjectRef(head.key, head.size, head.etag)
    decrypt_with = new_data_key() if source_env is not None else None
    try:
        anyio.run(lambda: transfer(job, ref, head, decrypt_with=decrypt_with, source_env=source_env,
                                   encrypt=job.cse))
    except ObjectError:
        assert s3.calls == [], s3.calls   # refused: nothing was asked of S3
        raise
    return s3.calls


def test_plaintext_over_gcm_limit_is_refused_before_any_io() -> None:
    with pytest.raises(ObjectError) as info:
        run_transfer(GCM_MAX_PLAINTEXT + 1)
    message = str(info.value)
    assert "GCM" in message and str(GCM_MAX_PLAINTEXT) in message and "huge.bin" in message


def test_plaintext_at_gcm_limit_is_accepted() -> None:
    with pytest.raises(WrapReached):  # got past the size check to key wrapping
        run_transfer(GCM_MAX_PLAINTEXT)


def test_client_side_source_is_measured_by_its_plaintext() -> None:
    """A V2 source re-encrypted to V3: ciphertext = plaintext + 16-byte tag; the limit is on the plaintext."""
    env = v2_source_envelope()
    with pytest.raises(ObjectError, match="GCM"):
        run_transfer(GCM_MAX_PLAINTEXT + TAG + 1, source_env=env)
    with pytest.raises(WrapReached):
        run_transfer(GCM_MAX_PLAINTEXT + TAG, source_env=env)


def test_oversized_object_is_a_failed_outcome_with_the_reason() -> None:
    """Through migrate_object: the object is recorded as failed with the reason; the run is not stopped."""
    s3 = NoDataS3(head_of(GCM_MAX_PLAINTEXT + 1))
    job = make_job(s3)
    outcome = anyio.run(migrate_object, job, ObjectRef("huge.bin", GCM_MAX_PLAINTEXT + 1, '"abc"'))
    assert outcome.state == State.FAILED
    assert outcome.error is not None and "GCM" in outcome.error and str(GCM_MAX_PLAINTEXT) in outcome.error
    assert outcome.bytes_through_client == 0
    metadata_only = {"head huge.bin", "head huge.bin.instruction", "get huge.bin.instruction"}
    assert set(s3.calls) <= metadata_only, s3.calls
