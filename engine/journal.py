"""The checkpoint seen from the event loop: every SQLite call in one worker thread, one at a time.

Implements the workers' `PartJournal` and `ObjectJournal` hooks on top of `Checkpoint`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio

from engine.checkpoint import Checkpoint, UploadRow, database_error_message
from workers.errors import CheckpointError
from workers.job import UploadResume
from workers.model import Mode, ObjectRef, PartResult, PendingEnvelope

T = TypeVar("T")


class AsyncCheckpoint:
    """Runs `Checkpoint` methods in a thread under a limiter of one: a single writer, off the loop."""

    def __init__(self, checkpoint: Checkpoint, *, on_part: Callable[[str, int], None] | None = None) -> None:
        self.sync = checkpoint
        self._limiter = anyio.CapacityLimiter(1)
        self._on_part = on_part                   # progress: (key, bytes) as each multipart part completes
        self._upload_keys: dict[str, str] = {}    # upload id -> object key

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in the checkpoint's thread; an SQLite failure (disk full, folder made read-only) ends
        the run with one line naming the checkpoint."""
        with anyio.CancelScope(shield=True):  # a write that started finishes, even when cancelled
            try:
                result: T = await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise CheckpointError(database_error_message(self.sync.path, exc)) from None
        return result

    # --- PartJournal -----------------------------------------------------------------------------

    async def upload_started(self, ref: ObjectRef, *, upload_id: str, dest_bucket: str, dest_key: str,
                             part_size: int, source_etag: str, kind: str) -> None:
        if upload_id:
            self._upload_keys[upload_id] = ref.key
        await self.run(self.sync.start_upload, UploadRow(ref.key, ref.version_id or "", upload_id, dest_bucket,
                                                         dest_key, part_size, source_etag, kind))

    async def parts_done(self, upload_id: str, parts: Sequence[PartResult]) -> None:
        await self.run(self.sync.record_parts, upload_id, list(parts))
        key = self._upload_keys.get(upload_id)
        if self._on_part is not None and key is not None:
            self._on_part(key, sum(p.size for p in parts))

    async def upload_ended(self, ref: ObjectRef, upload_id: str, etag: str | None = None) -> None:
        self._upload_keys.pop(upload_id, None)
        await self.run(self.sync.finish_upload, ref.key, ref.version_id or "", upload_id, etag)

    async def resume_point(self, ref: ObjectRef) -> UploadResume | None:
        def read() -> UploadResume | None:
            row = self.sync.upload_for(ref.key, ref.version_id or "")
            if row is None:
                return None
            return UploadResume(row.upload_id, row.part_size, row.source_etag, row.kind,
                                self.sync.parts_for(row.upload_id) if row.upload_id else [],
                                row.dest_bucket, row.dest_key, row.created_at)
        return await self.run(read)

    # --- ObjectJournal ---------------------------------------------------------------------------

    async def source_seen(self, ref: ObjectRef, mode: Mode) -> None:
        await self.run(self.sync.record_source_mode, ref.key, ref.version_id or "", mode)

    async def envelope_pending(self, ref: ObjectRef, *, dest_key: str, old_etag: str,
                               instruction: Mapping[str, str]) -> None:
        await self.run(self.sync.put_envelope, ref.key, ref.version_id or "", dest_key, old_etag, dict(instruction))

    async def envelope_written(self, ref: ObjectRef) -> None:
        await self.run(self.sync.drop_envelope, ref.key, ref.version_id or "")

    async def pending_envelope(self, ref: ObjectRef) -> PendingEnvelope | None:
        return await self.run(self.sync.envelope_for, ref.key, ref.version_id or "")

    async def written(self, ref: ObjectRef, etag: str) -> None:
        await self.run(self.sync.record_written, ref.key, ref.version_id or "", etag)

    async def pending_envelope_keys(self) -> list[tuple[str, str]]:
        """(key, version id) of the envelopes waiting for their instruction file (a few: those a killed run
        left, kept until the next run puts them)."""
        return await self.run(self.sync.envelope_keys)
