"""An object and its `<key>.instruction` are one unit in the listing (engine.listing)."""

from __future__ import annotations

from engine.listing import _split_held, _written_since, pair_instruction_files
from workers.model import ObjectRef


def refs(*keys: str) -> list[ObjectRef]:
    return [ObjectRef(k, 1, '"e"') for k in keys]


def test_instruction_files_are_dropped_and_their_objects_marked() -> None:
    got = pair_instruction_files(refs("a", "a-b", "a.instruction", "b", "orphan.instruction"))
    assert [(r.key, r.paired) for r in got] == [("a", True), ("a-b", False), ("b", False),
                                                ("orphan.instruction", False)]


def test_objects_whose_instruction_file_may_come_later_are_held_below_the_position() -> None:
    # Listing order: "k" < "k-1" < "k.instruction"; a page ending at "k-1" cannot tell whether "k" has one.
    ready, held, position = _split_held(refs("a", "j", "k", "k-1"), "k-1", "")
    assert [r.key for r in ready] == ["a", "j"] and [r.key for r in held] == ["k", "k-1"]
    assert position == "j", "a resumed listing starts after the last ready key and lists the held ones again"
    ready, held, position = _split_held(refs("k", "k-1", "k.instruction", "z"), "z", "j")
    assert [r.key for r in held] == ["z"] and position == "k.instruction"   # the last key is always held


def test_instruction_files_written_after_their_object_was_listed_are_not_objects() -> None:
    assert _written_since("k.instruction", [set(), {"k"}])
    assert not _written_since("k.instruction", [set(), {"j"}]) and not _written_since("k", [{"k"}, set()])
