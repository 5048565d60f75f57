"""decide() over the whole matrix: source mode x target x route x known capabilities.

Every cell is checked against the rules a user relies on (nothing skipped that is not already right, client-side
objects never copied as if they were plain, no copy the server is known to get wrong, a stream as the last
fallback of every server-side copy), and a table of cells pins the exact strategies.
"""

from __future__ import annotations

import itertools

import pytest

from workers.capabilities import Capabilities, Topic, copy_applies, copy_supported, flag, part_copy_from
from workers.core.decide import ClientSide, ObjectState, RouteKind, Strategy, Target, decide
from workers.cse import ContentAlg, CseFormat
from workers.model import Action, Encryption, Mode, ObjectHead, SecretKey

MiB = 1024 * 1024
GiB = 1024 * MiB
KEY_A, KEY_B = SecretKey(b"a" * 32), SecretKey(b"b" * 32)
ARN_A = "arn:aws:kms:us-east-1:123456789012:key/1111-aaaa"
ARN_B = "arn:aws:kms:us-east-1:123456789012:key/2222-bbbb"

# --- the axes -----------------------------------------------------------------------------------------------

SOURCES: dict[str, tuple[Encryption, ClientSide | None]] = {
    "none": (Encryption(Mode.NONE), None),
    "sse-s3": (Encryption(Mode.SSE_S3), None),
    "sse-kms-a": (Encryption(Mode.SSE_KMS, kms_key_id=ARN_A), None),
    "dsse-a": (Encryption(Mode.DSSE_KMS, kms_key_id=ARN_A), None),
    "sse-c-a": (Encryption(Mode.SSE_C, sse_c_key_md5=KEY_A.md5_b64), None),
    "cse-v2-file": (Encryption(Mode.NONE), ClientSide(CseFormat.V2, ContentAlg.AES_GCM, instruction_file=True)),
    "cse-v1-cbc": (Encryption(Mode.SSE_S3), ClientSide(CseFormat.V1, ContentAlg.AES_CBC, instruction_file=False)),
    "cse-v3-other-key": (Encryption(Mode.NONE), ClientSide(CseFormat.V3, ContentAlg.AES_GCM_COMMIT, False)),
    "cse-v3-under-target": (Encryption(Mode.SSE_S3),
                            ClientSide(CseFormat.V3, ContentAlg.AES_GCM_COMMIT, False, under_target=True)),
}
TARGETS: dict[str, Target] = {
    "sse-s3": Target(Encryption(Mode.SSE_S3)),
    "sse-kms-a": Target(Encryption(Mode.SSE_KMS, kms_key_id=ARN_A)),
    "sse-kms-b": Target(Encryption(Mode.SSE_KMS, kms_key_id=ARN_B)),
    "dsse-a": Target(Encryption(Mode.DSSE_KMS, kms_key_id=ARN_A)),
    "sse-c-a": Target(Encryption(Mode.SSE_C, sse_c_key=KEY_A)),
    "sse-c-b": Target(Encryption(Mode.SSE_C, sse_c_key=KEY_B)),
    "sse-s3-decrypt-allowed": Target(Encryption(Mode.SSE_S3), allow_decrypt=True),
    "cse-v3": Target(Encryption(Mode.NONE), client_side=CseFormat.V3),
    "cse-v3-file": Target(Encryption(Mode.NONE), client_side=CseFormat.V3, instruction_file=True),
    "cse-v2": Target(Encryption(Mode.NONE), client_side=CseFormat.V2),
}
ROUTES = {
    "in-place": RouteKind(in_place=True, same_endpoint=True),
    "bucket-to-bucket": RouteKind(in_place=False, same_endpoint=True),
    "other-endpoint": RouteKind(in_place=False, same_endpoint=False),
}
CAPS = {
    "unknown": Capabilities(),
    "copy-keeps-encryption": Capabilities.from_flags({
        f"copy_applies_{s.value}_to_{t.value}": False for s, t in itertools.product(Mode, Mode)}),
    "copy-not-implemented": Capabilities.from_flags({
        f"copy_supported_{s.value}_to_{t.value}": False for s, t in itertools.product(Mode, Mode)}),
    "part-copy-refused": Capabilities.from_flags({f"upload_part_copy_from_{m.value}": False for m in Mode}),
    "update-works": Capabilities().learned(flag(Topic.UPDATE_ENCRYPTION, True)).learned(
        flag(Topic.PART_COPY_INTO_SSE_C, True)),
}
SIZES = {"small": 1000, "large": 100 * MiB, "over-5-GiB": 5 * GiB + 1}
MATRIX = list(itertools.product(SOURCES, TARGETS, ROUTES, CAPS, SIZES))

SERVER_SIDE_MOVES = {Strategy.UPDATE, Strategy.COPY, Strategy.MULTIPART_COPY, Strategy.STREAM}
COPIES = {Strategy.UPDATE, Strategy.COPY, Strategy.MULTIPART_COPY}


def cell(source: str, target: str, route: str, caps: str, size: str) -> tuple[ObjectState, Target]:
    enc, cs = SOURCES[source]
    head = ObjectHead(key="k", size=SIZES[size], etag='"e"', encryption=enc)
    return ObjectState(head, client_side=cs), TARGETS[target]


@pytest.mark.parametrize(("source", "target", "route", "caps", "size"), MATRIX)
def test_every_cell_keeps_the_rules(source: str, target: str, route: str, caps: str, size: str) -> None:
    state, tgt = cell(source, target, route, caps, size)
    r, c = ROUTES[route], CAPS[caps]
    got = decide(state, tgt, r, c).strategies
    assert got and len(set(got)) == len(got)
    if Strategy.SKIP in got or Strategy.REFUSE in got:
        assert len(got) == 1, "skip and refuse are final"
    # Nothing is skipped that is not already what the target asks (bucket to bucket: never, without a
    # destination that already holds it).
    if got == (Strategy.SKIP,):
        assert r.in_place
        if tgt.client_side is None:
            assert state.client_side is None and state.head.encryption.mode == tgt.encryption.mode
            assert state.head.encryption.kms_key_id == tgt.encryption.kms_key_id
            assert state.head.encryption.key_md5 == tgt.encryption.key_md5
        else:
            assert state.client_side is not None and state.client_side.under_target
    # A client-side object is never moved as if it were plain: its envelope (maybe in an instruction
    # file) would be left behind or left stale.
    if state.client_side is not None:
        assert not SERVER_SIDE_MOVES & set(got)
        if tgt.client_side is None and not tgt.allow_decrypt:
            assert got == (Strategy.REFUSE,)
    if state.client_side is None and tgt.client_side is not None:
        assert got == (Strategy.CSE_ENCRYPT,)
    if not r.same_endpoint:
        assert not COPIES & set(got) and Strategy.REWRAP not in got and Strategy.CSE_COPY not in got
    if caps in ("copy-keeps-encryption", "copy-not-implemented"):
        assert not COPIES & set(got)
    if caps == "part-copy-refused":
        assert Strategy.MULTIPART_COPY not in got
    if Strategy.UPDATE in got:
        assert r.in_place and caps == "update-works" and tgt.encryption.mode == Mode.SSE_KMS
        assert state.head.encryption.mode in (Mode.SSE_S3, Mode.SSE_KMS)
    if Strategy.COPY in got:
        assert state.head.size <= 5 * GiB
    if COPIES & set(got):
        assert got[-1] == Strategy.STREAM, "every server-side copy falls back to a stream"


@pytest.mark.parametrize(("source", "target", "route", "caps", "size", "want"), [
    # in place, server-side
    ("none", "sse-s3", "in-place", "unknown", "small", (Strategy.COPY, Strategy.STREAM)),
    ("sse-s3", "sse-s3", "in-place", "unknown", "small", (Strategy.SKIP,)),
    ("sse-kms-a", "sse-kms-a", "in-place", "copy-keeps-encryption", "large", (Strategy.SKIP,)),
    ("sse-kms-a", "sse-kms-b", "in-place", "unknown", "small", (Strategy.COPY, Strategy.STREAM)),
    # the finding: SeaweedFS keeps key A on a copy; once learned, plan and run both stream
    ("sse-kms-a", "sse-kms-b", "in-place", "copy-keeps-encryption", "small", (Strategy.STREAM,)),
    ("sse-kms-a", "sse-kms-b", "in-place", "update-works", "small",
     (Strategy.UPDATE, Strategy.COPY, Strategy.STREAM)),
    ("sse-s3", "sse-kms-b", "in-place", "update-works", "large",
     (Strategy.UPDATE, Strategy.MULTIPART_COPY, Strategy.STREAM)),
    ("none", "sse-kms-b", "in-place", "update-works", "small", (Strategy.COPY, Strategy.STREAM)),
    ("sse-s3", "sse-kms-b", "bucket-to-bucket", "update-works", "small", (Strategy.COPY, Strategy.STREAM)),
    ("none", "sse-s3", "in-place", "unknown", "large", (Strategy.MULTIPART_COPY, Strategy.STREAM)),
    ("none", "sse-s3", "in-place", "unknown", "over-5-GiB", (Strategy.MULTIPART_COPY, Strategy.STREAM)),
    ("none", "sse-s3", "in-place", "part-copy-refused", "large", (Strategy.STREAM,)),
    ("none", "sse-s3", "in-place", "copy-not-implemented", "small", (Strategy.STREAM,)),
    ("sse-c-a", "sse-c-a", "in-place", "unknown", "small", (Strategy.SKIP,)),
    ("sse-c-a", "sse-c-b", "in-place", "unknown", "small", (Strategy.COPY, Strategy.STREAM)),
    ("none", "sse-c-a", "in-place", "unknown", "large", (Strategy.STREAM,)),      # part copy into SSE-C unproven
    ("none", "sse-c-a", "in-place", "update-works", "large", (Strategy.MULTIPART_COPY, Strategy.STREAM)),
    ("dsse-a", "sse-kms-a", "in-place", "update-works", "small", (Strategy.COPY, Strategy.STREAM)),
    # bucket to bucket and other endpoints
    ("sse-s3", "sse-s3", "bucket-to-bucket", "unknown", "small", (Strategy.COPY, Strategy.STREAM)),
    ("sse-s3", "sse-s3", "other-endpoint", "unknown", "over-5-GiB", (Strategy.STREAM,)),
    # client-side sources
    ("cse-v2-file", "sse-s3", "in-place", "unknown", "small", (Strategy.REFUSE,)),
    ("cse-v2-file", "sse-s3", "bucket-to-bucket", "unknown", "small", (Strategy.REFUSE,)),
    ("cse-v2-file", "sse-s3-decrypt-allowed", "bucket-to-bucket", "unknown", "small", (Strategy.CSE_DECRYPT,)),
    ("cse-v3-under-target", "sse-s3", "in-place", "unknown", "small", (Strategy.REFUSE,)),
    ("cse-v2-file", "cse-v3", "in-place", "unknown", "small", (Strategy.CSE_REENCRYPT,)),
    ("cse-v2-file", "cse-v3-file", "in-place", "unknown", "large", (Strategy.CSE_REENCRYPT,)),
    ("cse-v2-file", "cse-v2", "in-place", "unknown", "small", (Strategy.REWRAP,)),
    ("cse-v1-cbc", "cse-v2", "in-place", "unknown", "small", (Strategy.CSE_REENCRYPT,)),
    ("cse-v3-other-key", "cse-v3", "in-place", "unknown", "small", (Strategy.REWRAP,)),
    ("cse-v3-other-key", "cse-v3", "other-endpoint", "unknown", "small", (Strategy.CSE_REENCRYPT,)),
    ("cse-v3-under-target", "cse-v3", "in-place", "unknown", "small", (Strategy.SKIP,)),
    ("cse-v3-under-target", "cse-v3", "bucket-to-bucket", "unknown", "small", (Strategy.CSE_COPY,)),
    ("cse-v3-under-target", "cse-v3", "other-endpoint", "unknown", "small", (Strategy.CSE_REENCRYPT,)),
    # plain or server-side into client-side
    ("sse-kms-a", "cse-v3", "in-place", "unknown", "large", (Strategy.CSE_ENCRYPT,)),
    ("none", "cse-v3-file", "bucket-to-bucket", "unknown", "small", (Strategy.CSE_ENCRYPT,)),
])
def test_cells(source: str, target: str, route: str, caps: str, size: str, want: tuple[Strategy, ...]) -> None:
    state, tgt = cell(source, target, route, caps, size)
    decision = decide(state, tgt, ROUTES[route], CAPS[caps])
    assert decision.strategies == want
    assert decision.reason


def test_source_mode_is_cse_for_any_client_side_object_whatever_the_server_adds() -> None:
    state, _ = cell("cse-v1-cbc", "sse-s3", "in-place", "unknown", "small")
    assert state.mode == Mode.CSE
    assert cell("sse-c-a", "sse-s3", "in-place", "unknown", "small")[0].mode == Mode.SSE_C


def test_actions_the_report_shows() -> None:
    assert Strategy.CSE_DECRYPT.action == Action.STREAM and Strategy.CSE_COPY.action == Action.REWRAP
    assert {s.action for s in Strategy} <= set(Action)
    assert [s for s in Strategy if s.through_rekey] == [Strategy.STREAM, Strategy.CSE_ENCRYPT, Strategy.CSE_DECRYPT,
                                                        Strategy.CSE_REENCRYPT]


# --- the capabilities record ----------------------------------------------------------------------------------


def test_capabilities_round_trip_through_their_stored_names() -> None:
    caps = (Capabilities()
            .learned(copy_applies((Mode.SSE_KMS, Mode.SSE_KMS), False))
            .learned(copy_supported((Mode.SSE_C, Mode.SSE_S3), False))
            .learned(part_copy_from(Mode.SSE_C, False))
            .learned(flag(Topic.COPY_FIRST, False))
            .learned(flag(Topic.IF_MATCH, True)))
    flags = caps.to_flags()
    assert flags == {"copy_applies_sse-kms_to_sse-kms": False, "copy_supported_sse-c_to_sse-s3": False,
                     "upload_part_copy_from_sse-c": False, "copy_first": False, "if_match": True}
    assert Capabilities.from_flags(flags) == caps
    assert not caps.copy_may_apply((Mode.SSE_KMS, Mode.SSE_KMS)) and caps.copy_may_apply((Mode.NONE, Mode.SSE_KMS))
    # Names only a routing module interprets (workers.carry, workers.readback) are kept as they are.
    kept = Capabilities.from_flags({"target_applied:sse-kms:k1": True, "keeps_tags_copy": False})
    assert kept.to_flags() == {"target_applied:sse-kms:k1": True, "keeps_tags_copy": False}
    assert kept.get("keeps_tags_copy") is False and kept.targets_applied == {"sse-kms:k1": True}
