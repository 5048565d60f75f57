"""Part sizing for multipart uploads and copies: 5 MiB to 5 GiB parts, at most 10,000 of them."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_SINGLE_COPY = 5 * 1024 * MiB  # CopyObject refuses larger sources


@dataclass(frozen=True, slots=True)
class PartSpan:
    """Bytes [start, end] inclusive of one part, numbered from 1."""

    number: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1


def adjust_part_size(size: int, wanted: int) -> int:
    """The part size to use for an object of `size` bytes: `wanted`, grown to fit 10,000 parts."""
    part = max(MIN_PART_SIZE, min(wanted, MAX_PART_SIZE))
    while size > part * MAX_PARTS:
        part *= 2
    return min(part, MAX_PART_SIZE)


def split(size: int, part_size: int) -> list[PartSpan]:
    """Cover [0, size) with parts of `part_size` (the last one shorter). An empty object has one empty part."""
    if size == 0:
        return [PartSpan(1, 0, -1)]
    spans = []
    number = 1
    for start in range(0, size, part_size):
        spans.append(PartSpan(number, start, min(start + part_size, size) - 1))
        number += 1
    if len(spans) > MAX_PARTS:
        raise ValueError(f"{size} bytes in parts of {part_size} needs {len(spans)} parts (max {MAX_PARTS})")
    return spans
