"""Pure pieces of the routing around server differences: If-Match forms, write paths, carried metadata."""

from __future__ import annotations

from workers.carry import metadata_mismatch, route_of
from workers.core.decide import _MALFORMED_ESCAPE
from workers.job import Job
from workers.model import Encryption, Location, Mode, ObjectHead
from workers.readback import path_of
from workers.stream import replace_guard


def job(*, in_place: bool) -> Job:
    return Job.of(source=None, dest=None, src=Location("a"), dst=Location("a" if in_place else "b"),  # type: ignore[arg-type]
                  in_place=in_place, same_endpoint=True, target=Encryption(Mode.SSE_KMS, kms_key_id="k"))


HEAD = ObjectHead("k", 10, '"0123abcd"', Encryption(Mode.SSE_C), metadata={"a": "1"}, content_type="text/plain")


def test_if_match_is_quoted_unless_the_server_wants_it_bare_and_only_in_place() -> None:
    assert replace_guard(job(in_place=True), HEAD) == '"0123abcd"'
    assert replace_guard(job(in_place=True), HEAD, unquoted=True) == "0123abcd"
    assert replace_guard(job(in_place=False), HEAD, unquoted=True) is None


def test_paths_name_source_target_route_and_place() -> None:
    assert path_of(job(in_place=True), HEAD, "multipart-copy") == "sse-c_to_sse-kms_multipart-copy_in-place"
    assert path_of(job(in_place=False), HEAD, "stream") == "sse-c_to_sse-kms_stream_new-key"
    assert route_of("stream", in_place=True, multipart=True) == "stream-multipart-in-place"
    assert route_of("copy", in_place=False, multipart=False) == "copy"


def test_metadata_mismatch_names_what_differs() -> None:
    assert metadata_mismatch(HEAD, HEAD) is None
    dropped = ObjectHead("k", 10, "x", Encryption(Mode.NONE), metadata={}, content_type="text/plain")
    assert "user metadata" in str(metadata_mismatch(HEAD, dropped))
    retyped = ObjectHead("k", 10, "x", Encryption(Mode.NONE), metadata={"a": "1"}, content_type="binary/octet-stream")
    assert "content type" in str(metadata_mismatch(HEAD, retyped))


def test_malformed_percent_escapes_are_told_from_good_ones() -> None:
    assert _MALFORMED_ESCAPE.search("50%-off") and _MALFORMED_ESCAPE.search("end%") \
        and _MALFORMED_ESCAPE.search("%4")
    assert not _MALFORMED_ESCAPE.search("100%25-x") and not _MALFORMED_ESCAPE.search("a%41b") \
        and not _MALFORMED_ESCAPE.search("plain")
