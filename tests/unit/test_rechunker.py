"""Cutting a client-side stream into upload parts: every part but the last is exactly part_size, no byte lost."""

from __future__ import annotations

import os
import random

import pytest

from workers.cse_transfer import Rechunker


@pytest.mark.parametrize("seed", range(50))
def test_parts_are_exact_and_bytes_are_kept(seed: int) -> None:
    rng = random.Random(seed)
    part_size = rng.randint(1, 50)
    data = os.urandom(rng.randint(0, 500))
    cutter, parts, at = Rechunker(part_size), [], 0
    while at < len(data):
        n = rng.randint(0, 80)
        cutter.push(data[at:at + n])
        parts += cutter.full_parts()
        at += n
    parts += cutter.rest()
    assert b"".join(parts) == data
    assert all(len(p) == part_size for p in parts[:-1])
    assert not parts or 0 < len(parts[-1]) <= part_size


def test_a_whole_part_passes_through_without_a_copy() -> None:
    cutter = Rechunker(4)
    chunk = b"abcd"
    cutter.push(chunk)
    [part] = cutter.full_parts()
    assert part is chunk
