"""The executor contract: batches of object refs in, outcomes (with who finished them) out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from workers.job import UploadResume
from workers.model import ObjectRef, Outcome

Item = ObjectRef | list[ObjectRef]   # one object, or every version of one key (noncurrent != "keep")
ResumeKey = tuple[str, str]          # (key, version id or "")


@dataclass(frozen=True, slots=True)
class Batch:
    """Items for one executor call, with the multipart uploads the checkpoint holds for any of them
    (an earlier run's, or one a lost actor left): the executor continues or aborts those."""

    items: Sequence[Item]
    resumes: Mapping[ResumeKey, UploadResume] = field(default_factory=dict)
    capabilities: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finished:
    """The outcomes of one batch and the actor that produced them ("local" for the local executor)."""

    outcomes: Sequence[Outcome]
    actor: str


@dataclass(frozen=True, slots=True)
class ExecutorStats:
    """For the report's `executor` section."""

    kind: str
    actors: int
    actors_lost: int = 0
    requests: int = 0       # requests the actors sent (the driver counts its own)
    batches_retried: int = 0  # batches of a lost actor handed to another
    uploads_carried: int = 0  # multipart uploads of those batches handed over to be continued or aborted
    requests_by_transport: Mapping[str, int] = field(default_factory=dict)   # the actors' requests, "fast"/"botocore"


class Executor(Protocol):
    """What the pipeline needs from an executor."""

    kind: str
    lanes: int          # batches in flight at once
    batch_size: int     # items per batch
    looks_up_resumes: bool  # True: every batch carries the uploads the checkpoint holds for its items

    def session(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held open for the whole run (actors, the journal pump); closed when the run ends."""
        ...

    async def migrate_batch(self, batch: Batch) -> Finished: ...

    def statistics(self) -> ExecutorStats: ...


@contextlib.asynccontextmanager
async def nothing_to_hold() -> AsyncIterator[None]:
    yield
