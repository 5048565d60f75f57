"""In place, the ETag of rekey's write is journaled before its slower checks (ObjectJournal.written). A run
killed before the outcome is recorded relists the object with that ETag: the checkpoint keeps the source's
ETag and size (what `verify --deep` compares the bytes with), and the outcome the resumed run records for
it does not overwrite them. Anybody else's write is still taken as a new source."""

from __future__ import annotations

from pathlib import Path

from engine.checkpoint import Checkpoint
from workers.model import Action, Mode, ObjectRef, Outcome, State

SOURCE = ObjectRef("k", 1000, "0123456789abcdef0123456789abcdef")   # a plain single-part ETag: an MD5
OURS = "fedcba9876543210fedcba9876543210-1"


def _cp(path: Path) -> Checkpoint:
    cp = Checkpoint.open(path, fingerprint="f", description="test")
    cp.begin_run()
    return cp


def _row(cp: Checkpoint) -> tuple[str, int, str | None, str]:
    [row] = list(cp.rows())
    return row.etag, row.size, row.new_etag, row.state.value


def _skipped_as_ours(size: int) -> Outcome:
    """What a resumed run records for an object it finds already in the target mode: read as it is now."""
    return Outcome(key="k", state=State.SKIPPED, action=Action.SKIP, source_mode=Mode.SSE_KMS,
                   target_mode=Mode.SSE_KMS, new_etag=OURS, size=size, etag=OURS)


def test_a_killed_write_relisted_keeps_the_source_etag_and_size(tmp_path: Path) -> None:
    cp = _cp(tmp_path / "cp.sqlite")
    cp.add_listed([SOURCE], position="k", done=True)
    cp.record_written("k", "", OURS)   # the write is in; then the run is killed
    cp.close()
    again = _cp(tmp_path / "cp.sqlite")
    todo = again.add_listed([ObjectRef("k", 1000, OURS)], position="k", done=True)
    assert [r.etag for r in todo] == [OURS]           # still to finish: its checks never ran
    assert _row(again) == (SOURCE.etag, 1000, OURS, "pending")
    again.record_outcomes([_skipped_as_ours(1000)])
    assert _row(again) == (SOURCE.etag, 1000, OURS, "skipped")


def test_a_finished_write_records_the_source_etag_and_the_new_one(tmp_path: Path) -> None:
    cp = _cp(tmp_path / "cp.sqlite")
    cp.add_listed([SOURCE], position="k", done=True)
    cp.record_written("k", "", OURS)
    cp.record_outcomes([Outcome(key="k", state=State.DONE, action=Action.COPY, source_mode=Mode.NONE,
                                target_mode=Mode.SSE_KMS, new_etag=OURS, size=1000, etag=SOURCE.etag)])
    assert _row(cp) == (SOURCE.etag, 1000, OURS, "done")
    assert cp.add_listed([ObjectRef("k", 1000, OURS)], position="k", done=True) == []   # a later pass: done


def test_someone_elses_write_is_a_new_source(tmp_path: Path) -> None:
    cp = _cp(tmp_path / "cp.sqlite")
    cp.add_listed([SOURCE], position="k", done=True)
    cp.record_written("k", "", OURS)
    theirs = ObjectRef("k", 2000, "99999999999999999999999999999999")
    assert cp.add_listed([theirs], position="k", done=True) == [theirs]
    assert _row(cp)[:2] == (theirs.etag, 2000)
    cp.record_outcomes([Outcome(key="k", state=State.DONE, action=Action.COPY, source_mode=Mode.NONE,
                                target_mode=Mode.SSE_KMS, new_etag="new-1", size=2000, etag=theirs.etag)])
    assert _row(cp) == (theirs.etag, 2000, "new-1", "done")


def test_the_etag_recorded_parts_make_is_s3s_multipart_etag() -> None:
    import hashlib

    from workers.model import PartResult
    from workers.multipart import multipart_etag
    first, second = hashlib.md5(b"a" * 10).hexdigest(), hashlib.md5(b"b").hexdigest()
    parts = [PartResult(2, f'"{second}"', 1), PartResult(1, f'"{first}"', 10)]   # as journaled: any order
    expected = hashlib.md5(bytes.fromhex(first) + bytes.fromhex(second)).hexdigest() + "-2"
    assert multipart_etag(parts) == expected
    assert multipart_etag([PartResult(1, '"not-an-md5"', 10)]) is None
    assert multipart_etag([PartResult(1, '"abcd"', 10)]) is None   # hex, but not 16 bytes
