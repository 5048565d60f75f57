"""Which objects a run covers: ListObjectsV2 under the prefix, include/exclude globs, rekey's own keys out."""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from engine.config import Config
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


async def list_objects(s3: S3, bucket: str, key_filter: KeyFilter, *,
                       start_after: str = "") -> AsyncIterator[tuple[list[ObjectRef], str, bool]]:
    """Pages of wanted objects as (refs, position, last page?); position is the last key seen."""
    position = start_after
    pages = s3.list_pages(bucket, key_filter.prefix, start_after=start_after)
    page: list[ObjectRef] | None = None
    async for nxt in pages:
        if page is not None:
            yield [r for r in page if key_filter.wants(r.key)], position, False
        page = nxt
        if nxt:
            position = nxt[-1].key
    yield [r for r in (page or []) if key_filter.wants(r.key)], position, True


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
            try:
                self._buffer, self._at = list(await anext(self._pages)), 0
            except StopAsyncIteration:
                self._done = True
