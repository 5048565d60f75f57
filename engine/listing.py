"""Which objects a run covers: ListObjectsV2 under the prefix, include/exclude globs, rekey's own keys out."""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

import anyio

from engine.config import Config
from workers.cse import INSTRUCTION_SUFFIX
from workers.model import ObjectRef
from workers.probes import PROBE_MARKER
from workers.s3 import S3


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """include/exclude globs (matched against the full key and the key below the prefix)."""

    prefix: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    skip_prefix: str | None = None  # a destination prefix inside the source listing

    @classmethod
    def from_config(cls, config: Config) -> KeyFilter:
        src, dst = config.source.location, config.destination.location
        skip = None
        if (not config.destination.in_place and dst.bucket == src.bucket and dst.prefix.startswith(src.prefix)
                and dst.prefix != src.prefix):
            skip = dst.prefix
        return cls(src.prefix, config.source.include, config.source.exclude, skip)

    def wants(self, key: str) -> bool:
        if PROBE_MARKER in key:
            return False
        if self.skip_prefix is not None and key.startswith(self.skip_prefix):
            return False
        rel = key[len(self.prefix):] if key.startswith(self.prefix) else key
        if self.include and not any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(rel, p)
                                    for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(key, p) or fnmatch.fnmatchcase(rel, p) for p in self.exclude)


def pair_instruction_files(refs: list[ObjectRef]) -> list[ObjectRef]:
    """An object and its `<key>.instruction` are one unit: the instruction file is dropped from the refs
    and its object marked `paired` (V1/V2 objects whose envelope is in the file carry no S3EC metadata,
    so only the listing can tell). Instruction files whose object is not among the refs stay (orphans)."""
    keys = {r.key for r in refs}
    bases = {r.key[:-len(INSTRUCTION_SUFFIX)] for r in refs
             if r.key.endswith(INSTRUCTION_SUFFIX) and r.key[:-len(INSTRUCTION_SUFFIX)] in keys}
    return [replace(r, paired=r.key in bases) for r in refs
            if not (r.key.endswith(INSTRUCTION_SUFFIX) and r.key[:-len(INSTRUCTION_SUFFIX)] in bases)]


def _split_held(refs: list[ObjectRef], last_key: str, position: str) -> tuple[list[ObjectRef], list[ObjectRef], str]:
    """(refs ready, refs held back, position of the ready ones): a ref is held while its instruction file
    could still come in a later page. The position stays below every held key, so a resumed listing
    lists them again."""
    held = [r for r in refs if r.key + INSTRUCTION_SUFFIX > last_key]
    if not held:
        return refs, [], last_key
    lowest = min(r.key for r in held)
    ready = [r for r in refs if r.key + INSTRUCTION_SUFFIX <= last_key]
    below = [r.key for r in refs if r.key < lowest]
    return ready, held, max(below) if below else position


def _written_since(key: str, recent: list[set[str]]) -> bool:
    """An instruction file whose object was listed (unpaired) a batch ago: written since, by this run
    or beside it; it belongs to its object, which is already on its way."""
    base = key[:-len(INSTRUCTION_SUFFIX)] if key.endswith(INSTRUCTION_SUFFIX) else None
    return base is not None and any(base in keys for keys in recent)


async def list_objects(s3: S3, bucket: str, key_filter: KeyFilter, *,
                       start_after: str = "") -> AsyncIterator[tuple[list[ObjectRef], str, bool]]:
    """Pages of wanted objects as (refs, position, last page?); position is the last key done with.
    Objects are paired with their instruction files (`pair_instruction_files`)."""
    async for page in paired_pages(s3.list_pages(bucket, key_filter.prefix, start_after=start_after),
                                   key_filter, start_after=start_after):
        yield page


async def paired_pages(pages: AsyncIterator[Sequence[ObjectRef]], key_filter: KeyFilter, *, start_after: str = "",
                       hi: str | None = None) -> AsyncIterator[tuple[list[ObjectRef], str, bool]]:
    """Listed pages (in key order) as (wanted refs, position, last?), objects paired with their instruction
    files. A ref is held back while its `<key>.instruction` could still be listed; with `hi` (a key range's
    end) keys past it are only looked at for pairing, never handed out."""
    position = start_after
    held: list[ObjectRef] = []
    ready: list[ObjectRef] | None = None
    recent: list[set[str]] = [set(), set()]   # keys of the last two batches
    async for page in pages:
        if not page:
            continue
        if ready is not None:
            yield ready, position, False
        batch = held + list(page)
        pairs = [r for r in pair_instruction_files(batch) if not _written_since(r.key, recent)]
        recent = [recent[1], {r.key for r in batch}]
        beyond = hi is not None and page[-1].key > hi
        if beyond:
            pairs = [r for r in pairs if r.key <= str(hi)]
            ready, held, position = pairs, [], max([position, *(r.key for r in pairs)])
        else:
            ready, held, position = _split_held(pairs, page[-1].key, position)
        ready = [r for r in ready if key_filter.wants(r.key)]
        if beyond:
            break
    if ready is not None:
        yield ready, position, False
    rest = [r for r in held if key_filter.wants(r.key)]
    yield rest, max([position, *(r.key for r in held)]), True


class DestinationIndex:
    """Merge-join of the destination listing with the source listing: both come sorted by key and
    the prefix rewrite keeps that order, so one pass over the destination replaces a HeadObject
    per object, in constant memory."""

    def __init__(self, s3: S3, bucket: str, src_prefix: str, dst_prefix: str, *, start_after: str = "") -> None:
        self._src_prefix = src_prefix
        self._dst_prefix = dst_prefix
        self._pages = s3.list_pages(bucket, dst_prefix, start_after=self.dest_key(start_after) if start_after else "")
        self._buffer: list[ObjectRef] = []
        self._at = 0
        self._done = False
        self._filling = anyio.Lock()

    def dest_key(self, key: str) -> str:
        rest = key[len(self._src_prefix):] if key.startswith(self._src_prefix) else key
        return self._dst_prefix + rest

    async def annotate(self, refs: list[ObjectRef]) -> list[ObjectRef]:
        """The refs (in key order) with what the destination listing shows for each."""
        out = []
        for ref in refs:
            dk = self.dest_key(ref.key)
            found = await self._seek(dk)
            out.append(replace(ref, dest_listed=True, dest_size=found.size if found else None))
        return out

    async def _seek(self, key: str) -> ObjectRef | None:
        while True:
            while self._at < len(self._buffer) and self._buffer[self._at].key < key:
                self._at += 1
            if self._at < len(self._buffer):
                head = self._buffer[self._at]
                return head if head.key == key else None
            if self._done:
                return None
            await self._next_page()

    async def prefetch(self) -> None:
        """Fetch the first page now, beside the source's first page, rather than once that has come."""
        if not self._buffer and not self._done:
            await self._next_page()

    async def _next_page(self) -> None:
        async with self._filling:   # `prefetch` and `annotate` may ask at once: one fetch, then the other looks
            if self._at < len(self._buffer) or self._done:
                return
            try:
                self._buffer, self._at = list(await anext(self._pages)), 0
            except StopAsyncIteration:
                self._done = True
