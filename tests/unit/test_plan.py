"""The server-side decision for one object (workers.core.decide) and part sizing (workers.parts)."""

from __future__ import annotations

import itertools
import math

import pytest

from workers.capabilities import Capabilities, copy_applies, part_copy_from
from workers.core.decide import Decision, ObjectState, RouteKind, Target
from workers.core.decide import decide as decide_object
from workers.model import Action, Encryption, Mode, ObjectHead, SecretKey
from workers.parts import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, adjust_part_size, split

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB
KEY_A = SecretKey(b"a" * 32)
KEY_B = SecretKey(b"b" * 32)
KMS_A = "1111-aaaa"
KMS_A_ARN = f"arn:aws:kms:us-east-1:123456789012:key/{KMS_A}"
THRESHOLD = 64 * MiB


def obj(enc: Encryption, size: int = 1000, etag: str = '"e1"', **extra: object) -> ObjectHead:
    return ObjectHead(key="k", size=size, etag=etag, encryption=enc, **extra)  # type: ignore[arg-type]


def plan(head: ObjectHead, target: Encryption, *, in_place: bool = True, same_endpoint: bool = True,
         dest: ObjectHead | None = None, part_copy_ok: bool = True, copy_ok: bool = True,
         threshold: int = THRESHOLD) -> Decision:
    caps = Capabilities()
    if not part_copy_ok:
        caps = caps.learned(part_copy_from(head.encryption.mode, False))
    if not copy_ok:
        caps = caps.learned(copy_applies((head.encryption.mode, target.mode), False))
    return decide_object(ObjectState(head, dest=dest), Target(target, multipart_threshold=threshold),
                         RouteKind(in_place=in_place, same_endpoint=same_endpoint), caps)


def decide(head: ObjectHead, target: Encryption, **kwargs: object) -> Action:
    return plan(head, target, **kwargs).action  # type: ignore[arg-type]


PLAIN = Encryption(Mode.NONE)
SSE_S3 = Encryption(Mode.SSE_S3)
KMS_A_SEEN = Encryption(Mode.SSE_KMS, kms_key_id=KMS_A_ARN)
SSE_C_A_SEEN = Encryption(Mode.SSE_C, sse_c_key_md5=KEY_A.md5_b64)


# --- in place: skip exactly when the object is already what the target asks ------------------------------


@pytest.mark.parametrize(("seen", "target", "action"), [
    (PLAIN, SSE_S3, Action.COPY),
    (SSE_S3, SSE_S3, Action.SKIP),
    (KMS_A_SEEN, SSE_S3, Action.COPY),
    (SSE_S3, Encryption(Mode.SSE_KMS, kms_key_id=KMS_A), Action.COPY),
    (KMS_A_SEEN, Encryption(Mode.SSE_KMS, kms_key_id=KMS_A), Action.SKIP),           # ARN seen, id wanted
    (KMS_A_SEEN, Encryption(Mode.SSE_KMS, kms_key_id=KMS_A_ARN), Action.SKIP),
    (KMS_A_SEEN, Encryption(Mode.SSE_KMS, kms_key_id="2222-bbbb"), Action.COPY),     # other key
    (Encryption(Mode.SSE_KMS, kms_key_id=KMS_A_ARN, bucket_key=False),
     Encryption(Mode.SSE_KMS, kms_key_id=KMS_A, bucket_key=True), Action.COPY),      # bucket key to turn on
    (Encryption(Mode.SSE_KMS, kms_key_id=KMS_A_ARN, bucket_key=True),
     Encryption(Mode.SSE_KMS, kms_key_id=KMS_A, bucket_key=True), Action.SKIP),
    (KMS_A_SEEN, Encryption(Mode.DSSE_KMS, kms_key_id=KMS_A), Action.COPY),          # single to dual layer
    (Encryption(Mode.DSSE_KMS, kms_key_id=KMS_A_ARN), Encryption(Mode.DSSE_KMS, kms_key_id=KMS_A), Action.SKIP),
    (SSE_C_A_SEEN, Encryption(Mode.SSE_C, sse_c_key=KEY_A), Action.SKIP),            # same customer key
    (SSE_C_A_SEEN, Encryption(Mode.SSE_C, sse_c_key=KEY_B), Action.COPY),            # key A to key B
    (Encryption(Mode.SSE_C), Encryption(Mode.SSE_C, sse_c_key=KEY_A), Action.COPY),  # MD5 unknown: rewrite
    (SSE_C_A_SEEN, SSE_S3, Action.COPY),
    (PLAIN, Encryption(Mode.SSE_C, sse_c_key=KEY_A), Action.COPY),
])
def test_in_place_skips_only_objects_already_in_the_target(seen: Encryption, target: Encryption,
                                                           action: Action) -> None:
    assert decide(obj(seen), target) == action


def test_bucket_to_bucket_copies_even_when_the_source_is_already_in_the_target() -> None:
    assert decide(obj(SSE_S3), SSE_S3, in_place=False) == Action.COPY


# --- how the bytes move ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "action"), [
    (0, Action.COPY),
    (THRESHOLD, Action.COPY),
    (THRESHOLD + 1, Action.MULTIPART_COPY),
    (5 * GiB + 1, Action.MULTIPART_COPY),
])
def test_copy_object_up_to_the_threshold_then_part_copy(size: int, action: Action) -> None:
    assert decide(obj(PLAIN, size), SSE_S3) == action


def test_objects_over_5_gib_are_part_copied_whatever_the_threshold() -> None:
    # CopyObject refuses sources over 5 GiB, so a threshold above that must not route them to it.
    assert decide(obj(PLAIN, 5 * GiB + 1), SSE_S3, threshold=10 * GiB) == Action.MULTIPART_COPY
    assert decide(obj(PLAIN, 5 * GiB), SSE_S3, threshold=10 * GiB) == Action.COPY


def test_part_copy_refused_means_stream_for_large_objects_only() -> None:
    assert decide(obj(SSE_C_A_SEEN, THRESHOLD + 1), SSE_S3, part_copy_ok=False) == Action.STREAM
    assert decide(obj(SSE_C_A_SEEN, 10), SSE_S3, part_copy_ok=False) == Action.COPY


def test_copy_that_does_not_apply_the_encryption_means_stream_at_any_size() -> None:
    target = Encryption(Mode.SSE_KMS, kms_key_id="2222-bbbb")
    assert decide(obj(KMS_A_SEEN, 10), target, copy_ok=False) == Action.STREAM
    assert decide(obj(KMS_A_SEEN, THRESHOLD + 1), target, copy_ok=False) == Action.STREAM
    assert decide(obj(KMS_A_SEEN, 10), Encryption(Mode.SSE_KMS, kms_key_id=KMS_A), copy_ok=False) \
        == Action.SKIP  # already right: nothing to move


def test_different_endpoints_always_stream() -> None:
    assert decide(obj(PLAIN, 10), SSE_S3, in_place=False, same_endpoint=False) == Action.STREAM
    assert decide(obj(PLAIN, 6 * GiB), SSE_S3, in_place=False, same_endpoint=False) == Action.STREAM


# --- bucket to bucket: what is already at the destination --------------------------------------------------


KMS_TARGET = Encryption(Mode.SSE_KMS, kms_key_id=KMS_A)


def test_destination_already_holding_the_object_in_the_target_is_skipped() -> None:
    src = obj(PLAIN, 1000, etag='"same"', last_modified=100.0)
    dest = obj(KMS_A_SEEN, 1000, etag='"same"', last_modified=50.0)
    assert decide(src, KMS_TARGET, in_place=False, dest=dest) == Action.SKIP


def test_destination_with_other_etag_but_same_metadata_and_newer_is_skipped() -> None:
    # ETags of encrypted objects may differ from the source's: a newer copy with the same metadata counts.
    src = obj(PLAIN, 1000, etag='"src"', last_modified=100.0, metadata={"a": "1"}, content_type="text/plain")
    dest = obj(KMS_A_SEEN, 1000, etag='"dst"', last_modified=200.0, metadata={"a": "1"}, content_type="text/plain")
    assert decide(src, KMS_TARGET, in_place=False, dest=dest) == Action.SKIP


@pytest.mark.parametrize("change", ["size", "encryption", "older", "metadata", "content_type", "no_times"])
def test_destination_that_differs_is_copied_again(change: str) -> None:
    src = obj(PLAIN, 1000, etag='"src"', last_modified=100.0, metadata={"a": "1"}, content_type="text/plain")
    fields: dict[str, object] = {"size": 1000, "etag": '"dst"', "last_modified": 200.0, "metadata": {"a": "1"},
                                 "content_type": "text/plain"}
    enc = KMS_A_SEEN
    if change == "size":
        fields["size"] = 999
    elif change == "encryption":
        enc = SSE_S3
    elif change == "older":
        fields["last_modified"] = 99.0
    elif change == "metadata":
        fields["metadata"] = {"a": "2"}
    elif change == "content_type":
        fields["content_type"] = "text/html"
    else:
        fields["last_modified"] = None
    dest = obj(enc, **fields)  # type: ignore[arg-type]
    assert decide(src, KMS_TARGET, in_place=False, dest=dest) == Action.COPY


def test_every_plan_gives_a_reason() -> None:
    decision = plan(obj(PLAIN, 10), SSE_S3)
    assert decision.action == Action.COPY and decision.reason


# --- part sizing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "wanted", "part"), [
    (100 * MiB, 8 * MiB, 8 * MiB),
    (100 * MiB, 1 * MiB, MIN_PART_SIZE),                       # below the S3 minimum
    (100 * GiB, 8 * GiB, MAX_PART_SIZE),                       # above the S3 maximum
    (MAX_PARTS * 5 * MiB, 5 * MiB, 5 * MiB),                   # exactly 10,000 parts fit
    (MAX_PARTS * 5 * MiB + 1, 5 * MiB, 10 * MiB),              # one byte more: larger parts
    (5 * GiB + 1, 16 * MiB, 16 * MiB),                         # 321 parts
    (5 * TiB, 16 * MiB, GiB),                                  # S3's largest object: 5,120 parts of 1 GiB
    (5 * TiB, 5 * MiB, 640 * MiB),
])
def test_adjust_part_size(size: int, wanted: int, part: int) -> None:
    assert adjust_part_size(size, wanted) == part


@pytest.mark.parametrize("size", [1, 5 * MiB, 5 * MiB + 1, 64 * MiB + 7, 5 * GiB + 1, 100 * GiB + 3, 5 * TiB])
@pytest.mark.parametrize("wanted", [5 * MiB, 16 * MiB, 100 * MiB])
def test_parts_cover_the_object_within_s3_limits(size: int, wanted: int) -> None:
    part = adjust_part_size(size, wanted)
    spans = split(size, part)
    assert len(spans) <= MAX_PARTS
    assert len(spans) == math.ceil(size / part)
    assert [s.number for s in spans] == list(range(1, len(spans) + 1))
    assert spans[0].start == 0 and spans[-1].end == size - 1
    assert all(a.end + 1 == b.start for a, b in itertools.pairwise(spans))
    assert all(MIN_PART_SIZE <= s.size <= MAX_PART_SIZE for s in spans[:-1])
    assert 0 < spans[-1].size <= part


def test_split_of_a_5_gib_object_over_the_threshold() -> None:
    size = 5 * GiB + 1
    spans = split(size, adjust_part_size(size, 16 * MiB))
    assert len(spans) == 321
    assert spans[-1].size == 1
    assert sum(s.size for s in spans) == size


def test_split_of_an_empty_object_is_one_empty_part() -> None:
    spans = split(0, 5 * MiB)
    assert len(spans) == 1 and spans[0].number == 1 and spans[0].size == 0


def test_split_refuses_more_than_10000_parts() -> None:
    with pytest.raises(ValueError, match="10000"):
        split(MAX_PARTS * 5 * MiB + 1, 5 * MiB)
