"""Which object versions a run covers on a versioned bucket: ListObjectVersions, one group per key.

A group holds every version of one key, oldest first, delete markers left out; the version S3 calls
latest has `is_latest` set (none has when the latest is a delete marker: the key is deleted). S3 lists a
key's versions newest first and may cut a key across pages, so the last key of a truncated page is
held back and completed from the next page: a key is never split across the pages yielded here.

Resume: a page's position is the last key whose group is complete in it; `start_after` is passed to
ListObjectVersions as KeyMarker, which lists the versions of the keys after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from engine.listing import KeyFilter
from workers.model import ObjectRef
from workers.s3 import S3

Group = list[ObjectRef]


def group_page(items: list[ObjectRef]) -> list[Group]:
    """Versions as S3 lists them (key order, newest first within a key) -> groups, oldest first."""
    groups: list[Group] = []
    for ref in items:
        if groups and groups[-1][0].key == ref.key:
            groups[-1].append(ref)
        else:
            groups.append([ref])
    for group in groups:
        group.reverse()
    return groups


async def version_groups(s3: S3, bucket: str, key_filter: KeyFilter, *, start_after: str = "",
                         page_size: int = 1000) -> AsyncIterator[tuple[list[Group], str, bool]]:
    """Pages of (groups of wanted keys, position, last page?)."""
    key_marker: str = start_after
    version_marker: str | None = None
    position = start_after
    carried: list[ObjectRef] = []   # newest first: the versions of a key the previous page cut
    while True:
        page = await s3.list_versions(bucket, prefix=key_filter.prefix, key_marker=key_marker,
                                      version_id_marker=version_marker, max_keys=page_size)
        items = carried + list(page.versions)
        truncated = page.truncated and bool(page.next_key_marker)
        carried = []
        if truncated and items:
            last_key = items[-1].key
            carried = [r for r in items if r.key == last_key]
            items = items[:len(items) - len(carried)]
        groups = group_page(items)
        if groups:
            position = groups[-1][0].key
        yield [g for g in groups if key_filter.wants(g[0].key)], position, not truncated
        if not truncated:
            return
        key_marker, version_marker = str(page.next_key_marker), page.next_version_id_marker or ""


async def key_versions(s3: S3, bucket: str, key: str) -> Group:
    """Every version of one key, oldest first (to rebuild the group of a key a resumed run left unfinished)."""
    found: Group = []
    async for groups, _, _ in version_groups(s3, bucket, KeyFilter(key, (), ())):
        found += [r for g in groups for r in g if r.key == key]
    return found
