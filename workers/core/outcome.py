"""The one place an Outcome is built, from what a strategy did or the error that stopped it.

Truthful by construction: the action is the strategy that ran (or was running when it failed), `skip`
only when nothing was written and nothing failed; the source mode is the mode as found (`cse` for any
client-side object); retries are the ones counted for this object.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.core.decide import Strategy
from workers.errors import ObjectChangedError, RekeyError
from workers.job import object_retries
from workers.model import Action, Mode, ObjectRef, Outcome, State


@dataclass(frozen=True, slots=True)
class Written:
    """What a strategy did to one object."""

    strategy: Strategy
    bytes_copied: int = 0            # bytes the server copied
    bytes_through_client: int = 0    # bytes rekey read and wrote
    new_etag: str | None = None
    plaintext_sha256: str | None = None
    reason: str | None = None        # refuse: why not; otherwise why the object stays as the server keeps it
    settled: bool = False            # written, but the server keeps it as it was (the reason says why)


@dataclass(frozen=True, slots=True)
class Subject:
    """Which object an outcome is about, and how it was found."""

    ref: ObjectRef
    listed_version: str | None       # the checkpoint row's identity (None for a ListObjectsV2 ref)
    source_mode: Mode | None         # None: not learned (the HEAD itself failed, or copied before reading)
    target_mode: Mode
    read: bool = False               # `ref` carries the size and ETag HeadObject gave

    @property
    def size(self) -> int | None:
        return self.ref.size if self.read else None

    @property
    def etag(self) -> str | None:
        return self.ref.etag if self.read else None


def _retries() -> int:
    counter = object_retries.get()
    return counter[0] if counter is not None else 0


def done(subject: Subject, written: Written) -> Outcome:
    s = written.strategy
    state = State.SKIPPED if s in (Strategy.SKIP, Strategy.REFUSE) or written.settled else State.DONE
    return Outcome(key=subject.ref.key, state=state, action=s.action, source_mode=subject.source_mode,
                   target_mode=subject.target_mode, bytes_copied=written.bytes_copied,
                   bytes_through_client=written.bytes_through_client, new_etag=written.new_etag,
                   version_id=subject.listed_version, error=written.reason, retries=_retries(),
                   plaintext_sha256=written.plaintext_sha256, size=subject.size, etag=subject.etag)


def failed(subject: Subject, exc: RekeyError, running: Strategy | None) -> Outcome:
    """A per-object error. `running` is the strategy that was under way (None: failed before deciding,
    so no action was taken)."""
    state = State.CHANGED if isinstance(exc, ObjectChangedError) else State.FAILED
    action: Action | None = running.action if running is not None else None
    return Outcome(key=subject.ref.key, state=state, action=action, source_mode=subject.source_mode,
                   target_mode=subject.target_mode, version_id=subject.listed_version, error=str(exc),
                   error_kind=type(exc).__name__, retries=_retries(), size=subject.size, etag=subject.etag)


def gone(subject: Subject, exc: RekeyError) -> Outcome:
    """HeadObject says 404 for an object listed moments ago: deleted by someone else, nothing to do."""
    return Outcome(key=subject.ref.key, state=State.SKIPPED, action=Action.SKIP, source_mode=None,
                   target_mode=subject.target_mode, version_id=subject.listed_version,
                   error=f"{exc.where()}: deleted since it was listed", error_kind=type(exc).__name__,
                   retries=_retries())


def missing(subject: Subject, exc: RekeyError) -> Outcome:
    """A key a manifest names does not exist: failed, with the reason (the run exits 1)."""
    return Outcome(key=subject.ref.key, state=State.FAILED, action=None, source_mode=None,
                   target_mode=subject.target_mode, version_id=subject.listed_version,
                   error=f"{exc.where()}: listed in the manifest but does not exist", error_kind=type(exc).__name__,
                   retries=_retries())
