"""The local executor: every batch runs in this process, under the run's throttle (today's single process)."""

from __future__ import annotations

import contextlib

from engine.executor.base import Batch, ExecutorStats, Finished, nothing_to_hold
from engine.executor.items import ItemContext, migrate_item
from engine.retry import Throttle

LOCAL_ACTOR = "local"


class LocalExecutor:
    """One object per batch and `concurrency` batches at once, so no object waits for another's batch."""

    kind = "local"
    batch_size = 1
    looks_up_resumes = False   # nothing is lost mid-run here: the uploads known at the start suffice

    def __init__(self, ctx: ItemContext, throttle: Throttle, *, concurrency: int) -> None:
        self._ctx = ctx
        self._throttle = throttle
        self.lanes = concurrency

    def session(self) -> contextlib.AbstractAsyncContextManager[None]:
        return nothing_to_hold()

    async def migrate_batch(self, batch: Batch) -> Finished:
        outcomes = []
        for item in batch.items:
            await self._throttle.acquire()
            try:
                had = not isinstance(item, list) and (item.key, item.version_id or "") in batch.resumes
                outcomes += await migrate_item(self._ctx, item, had_upload=had)
            finally:
                await self._throttle.release()
        return Finished(outcomes, LOCAL_ACTOR)

    def statistics(self) -> ExecutorStats:
        return ExecutorStats(self.kind, 1)
