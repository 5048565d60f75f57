"""Listing in parallel: the key space under the source prefix cut into ranges that are listed at once.

ListObjectsV2 returns 1,000 keys a call, so one chain of calls lists a billion keys in about a day. A first
sample learns where the keys are: one key after each probe point (just below the prefix followed by a
printable character) tells which stretches of the key space hold keys; when they all fall in one stretch, the sample
goes one character deeper there. Each stretch `(lo, hi]` with keys is a range listed by its own task with
StartAfter, its resume position kept in the checkpoint (table `listing_ranges`). The ranges cover the
whole key space (an empty stretch is joined to the range before it), so keys that appear later in any
stretch are found by the next pass. A listing of up to SPLIT_ABOVE keys is one range.

An S3 Inventory `manifest.json` with several data files is split by its files instead: one range per file,
its position the last row of that file consumed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from engine.listing import KeyFilter, paired_pages
from workers.model import KeyRange, ObjectRef
from workers.s3 import S3

PROBE_CHARS = [chr(c) for c in range(0x21, 0x7F)]   # printable ASCII; keys below sort into the first range
# A cut point sorts just below `stem + c`: `stem + (c - 1) + U+10FFFD`. Never a plain `stem + c`: SeaweedFS
# lists StartAfter=<a "directory" name> as if every key under it came before it (StartAfter "a" skips "a/1").
BELOW = "\U0010FFFD"
SAMPLE_DEPTH = 3        # characters below the prefix the sample may go down to
RANGE_LISTERS = 4       # ranges listed at once
SPLIT_ABOVE = 10_000    # keys: a listing this short is not split (listed in one sequence, it keeps up)


async def _first_after(s3: S3, bucket: str, prefix: str, point: str) -> str | None:
    page = await s3.list_page(bucket, prefix=prefix, start_after=point, max_keys=1)
    return page.refs[0].key if page.refs else None


@dataclass
class Listed:
    """The pages the range probe listed from the start of a pass, in order: handed out again when the pass
    is one range, not fetched a second time (a page of 1,000 keys takes SeaweedFS some 0.1 s)."""

    pages: list[list[ObjectRef]] = field(default_factory=list)
    complete: bool = False   # the probe reached the listing's end

    def usable(self) -> bool:
        return bool(self.pages) and (self.complete or bool(self.pages[-1]))


async def _more_than(s3: S3, bucket: str, prefix: str, count: int, listed: Listed | None = None) -> bool:
    """Does the listing hold more than `count` keys? (Up to count / 1,000 pages listed, in sequence.)"""
    seen, token = 0, None
    while True:
        page = await s3.list_page(bucket, prefix=prefix, token=token, max_keys=min(1000, count - seen))
        seen += len(page.refs)
        if listed is not None:
            listed.pages.append(list(page.refs))
        if not page.truncated or not page.next_token:
            if listed is not None:
                listed.complete = True
            return False
        if seen >= count:
            return True
        token = page.next_token


async def _sample(s3: S3, bucket: str, prefix: str, stem: str) -> list[str]:
    """Cut points below `stem` that begin a stretch holding keys (each cut point starts its stretch)."""
    points = [stem + chr(ord(c) - 1) + BELOW for c in PROBE_CHARS]
    firsts: list[str | None] = [None] * len(points)

    async def probe(i: int) -> None:
        firsts[i] = await _first_after(s3, bucket, prefix, points[i])

    async with anyio.create_task_group() as tg:
        for i in range(len(points)):
            tg.start_soon(probe, i)
    cuts = []
    for i, first in enumerate(firsts):
        nxt = points[i + 1] if i + 1 < len(points) else None
        if first is not None and first.startswith(stem) and (nxt is None or first <= nxt):
            cuts.append(points[i])
    return cuts


async def learn_ranges(s3: S3, bucket: str, prefix: str, listed: Listed | None = None) -> list[KeyRange]:
    """Ranges for a new pass: one when the listing holds at most SPLIT_ABOVE keys, else one per stretch that
    holds keys. Below that, one sequence of pages keeps ahead of the copies, and a sample (some 90 to 300
    one-key listings) would cost more than it saves. The one range's pages listed here go into `listed`."""
    probe = Listed()
    if not await _more_than(s3, bucket, prefix, SPLIT_ABOVE, probe):
        if listed is not None:
            listed.pages, listed.complete = probe.pages, probe.complete
        return [KeyRange("", None, "")]
    stem, cuts = prefix, []
    for _ in range(SAMPLE_DEPTH):
        cuts = await _sample(s3, bucket, prefix, stem)
        if len(cuts) != 1:
            break
        stem += chr(ord(cuts[0][len(stem)]) + 1)   # every key sampled starts with this: one character deeper
    return ranges_from_cuts(cuts)


def ranges_from_cuts(cuts: Sequence[str]) -> list[KeyRange]:
    """Half-open stretches between the cut points, the first from the beginning, the last to the end."""
    bounds = ["", *sorted(set(cuts))]
    his: list[str | None] = [*bounds[1:], None]
    return [KeyRange(lo, hi, lo) for lo, hi in zip(bounds, his, strict=True)]


PageSink = Callable[[KeyRange, list[ObjectRef], str, bool], Awaitable[None]]
Pages = AsyncIterator[tuple[list[ObjectRef], str, bool]]   # (wanted refs, position, last page?)


async def list_ranges(ranges: Sequence[KeyRange], pages_of: Callable[[KeyRange], Pages], on_page: PageSink,
                      on_start: Callable[[KeyRange], Coroutine[Any, Any, None]] | None = None) -> None:
    """List the unfinished ranges, RANGE_LISTERS at once; `on_page(range, wanted refs, position, last)` is
    called for each page of a range in order (the pages of different ranges interleave). `on_start(range)`
    runs beside the range's listing as it begins (the destination's first page, fetched meanwhile)."""
    todo = [r for r in ranges if not r.done]
    send, recv = anyio.create_memory_object_stream[KeyRange](len(todo) or 1)
    for r in todo:
        send.send_nowait(r)
    send.close()

    async def lister() -> None:
        async for key_range in recv:
            async with anyio.create_task_group() as beside:
                if on_start is not None:
                    beside.start_soon(on_start, key_range)
                async for refs, position, last in pages_of(key_range):
                    await on_page(key_range, refs, position, last)

    async with anyio.create_task_group() as tg:
        for _ in range(min(RANGE_LISTERS, len(todo))):
            tg.start_soon(lister)


async def key_range_pages(s3: S3, bucket: str, key_filter: KeyFilter, key_range: KeyRange,
                          listed: Listed | None = None) -> Pages:
    """One key range of the bucket listing, from its position: pages of wanted refs, the last one flagged;
    objects paired with their instruction files (keys past the range's end are looked at for pairing only).
    A range from the start of the listing begins with the pages `listed` already holds."""
    if listed is not None and listed.usable() and not key_range.position and not key_range.lo:
        pages = _listed_then_rest(s3, bucket, key_filter.prefix, listed)
    else:
        pages = s3.list_pages(bucket, key_filter.prefix, start_after=key_range.position)
    async for page in paired_pages(pages, key_filter, start_after=key_range.position, hi=key_range.hi):
        yield page


async def _listed_then_rest(s3: S3, bucket: str, prefix: str, listed: Listed) -> AsyncIterator[list[ObjectRef]]:
    pages, listed.pages = listed.pages, []   # handed out once
    for refs in pages:
        yield refs
    if not listed.complete:
        async for refs in s3.list_pages(bucket, prefix, start_after=pages[-1][-1].key):
            yield refs


def file_ranges(files: Sequence[Path]) -> list[KeyRange]:
    """An S3 Inventory manifest split by its data files: one range each, its position a row of that file."""
    return [KeyRange(f"{i:06d}:{f.name}", None, "") for i, f in enumerate(files)]
