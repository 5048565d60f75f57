"""What happens to one item of a batch, the same on every executor: migrate it (one object, or a key's
versions), turn per-object errors into outcomes, and abort an earlier upload the object no longer needs."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import Config
from engine.executor.base import Item
from engine.manifest import trusted_skip
from engine.retry import Throttle
from workers.core.migrate import migrate_object
from workers.job import Job
from workers.model import Action, ObjectRef, Outcome, State
from workers.multipart import abandon, adopt_completed
from workers.versions import migrate_versions


@dataclass(frozen=True, slots=True)
class ItemContext:
    """The per-run settings an item needs besides the job."""

    job: Job
    noncurrent: str = "keep"
    confirm_delete_noncurrent: bool = False
    trust_manifest_encryption: bool = False
    from_manifest: bool = False             # keys come from a manifest: a key that does not exist is failed

    @classmethod
    def of(cls, config: Config, job: Job, *, confirm_delete_noncurrent: bool) -> ItemContext:
        return cls(job, config.run.noncurrent.value, confirm_delete_noncurrent,
                   config.source.manifest_trust_encryption, bool(config.source.manifest))


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """A worker's per-item context and the throttle its objects pass (see engine.job.worker_context)."""

    items: ItemContext
    throttle: Throttle

    @property
    def requests(self) -> int:
        job = self.items.job
        return job.source.requests + (job.dest.requests if job.dest is not job.source else 0)

    @property
    def requests_by_transport(self) -> dict[str, int]:
        job = self.items.job
        clients = [job.source] if job.dest is job.source else [job.source, job.dest]
        return {name: sum(c.requests_by_transport[name] for c in clients) for name in ("fast", "botocore")}


async def process_one(job: Job, ref: ObjectRef, *, listed: bool = True) -> Outcome:
    """One object's outcome (workers.core.migrate builds it, per-object errors included); fatal errors
    propagate. `listed=False`: the key comes from a manifest (a missing one is failed, not skipped)."""
    return await migrate_object(job, ref, listed=listed)


async def migrate_item(ctx: ItemContext, item: Item, *, had_upload: bool = False) -> list[Outcome]:
    """One item's outcomes. `had_upload`: the checkpoint held a multipart upload for this object when it
    was handed out; once the object is finished (or found already right) that upload, if still recorded,
    is dead and is aborted so nothing is left behind."""
    job = ctx.job
    if isinstance(item, list):
        return await migrate_versions(job, item, ctx.noncurrent, confirmed=ctx.confirm_delete_noncurrent)
    if ctx.trust_manifest_encryption and trusted_skip(item, job.target):
        return [Outcome(key=item.key, state=State.SKIPPED, action=Action.SKIP, source_mode=item.listed_mode,
                        target_mode=job.target.mode, new_etag=item.etag or None)]
    outcome = await process_one(job, item, listed=not ctx.from_manifest)
    if had_upload and job.journal is not None:
        point = await job.journal.resume_point(item)
        if point is not None:
            await adopt_completed(job, item, point, outcome.etag)
            await abandon(job, item, point)
    return [outcome]
