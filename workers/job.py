"""What a worker is given to process objects: clients, target, limits, and the engine's hooks.

A `Job` is three records: the `Route` (clients, locations, in place or not), the `Policy` (target, keys,
sizes, verification) and the `Hooks` the engine lends (`PartJournal`, `ObjectJournal`, `Retrier`,
`CapabilityHook`: protocols the engine implements, so a worker checkpoints and retries without importing it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from workers.capabilities import CapabilityHook, LocalCapabilities
from workers.core.decide import RouteKind, Target
from workers.cse import CseFormat
from workers.memory import BufferPool, MemoryBudget
from workers.model import Encryption, Location, Mode, ObjectRef, PartResult, PendingEnvelope, SecretKey
from workers.s3 import S3

if TYPE_CHECKING:
    from workers.cse import Keyring

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UploadResume:
    """A multipart upload started by an earlier run for the same object, with its finished parts."""

    upload_id: str                   # "" = only the intent was recorded (killed before the id came back)
    part_size: int
    source_etag: str
    kind: str
    parts: Sequence[PartResult]
    dest_bucket: str = ""
    dest_key: str = ""
    created_at: float = 0.0


class PartJournal(Protocol):
    """Durable record of multipart uploads, so a killed run continues instead of starting again."""

    async def upload_started(self, ref: ObjectRef, *, upload_id: str, dest_bucket: str, dest_key: str,
                             part_size: int, source_etag: str, kind: str) -> None: ...

    async def parts_done(self, upload_id: str, parts: Sequence[PartResult]) -> None: ...

    async def upload_ended(self, ref: ObjectRef, upload_id: str, etag: str | None = None) -> None:
        """The upload completed or was aborted; `etag`: in place, the completed object's ETag as answered,
        recorded in the same transaction as rekey's write of `ref` (see ObjectJournal.written)."""

    async def resume_point(self, ref: ObjectRef) -> UploadResume | None: ...


class Retrier(Protocol):
    """The engine's retry policy for one part or request: retryable errors only, with backoff."""

    async def __call__(self, what: str, fn: Callable[[], Awaitable[T]]) -> T: ...


class ObjectJournal(Protocol):
    """Durable facts about one object recorded before a write that could lose them: the source mode as
    found (in place, the write replaces what it was read from), a new client-side envelope (wrapped
    key, no secret) to go in an instruction file after its data, so a run killed between the two writes
    puts it again, and (in place) the ETag of the write, recorded as soon as the server reports it."""

    async def source_seen(self, ref: ObjectRef, mode: Mode) -> None: ...

    async def envelope_pending(self, ref: ObjectRef, *, dest_key: str, old_etag: str,
                               instruction: Mapping[str, str]) -> None: ...

    async def envelope_written(self, ref: ObjectRef) -> None: ...

    async def written(self, ref: ObjectRef, etag: str) -> None:
        """In place, the ETag the server reports for rekey's write of `ref`, recorded before the checks that
        follow it (metadata and tags, read-back): a run killed meanwhile relists the object as rekey's own
        write, and the source's ETag and checksum stay the proof `verify --deep` compares with."""

    async def pending_envelope(self, ref: ObjectRef) -> PendingEnvelope | None: ...


@dataclass(frozen=True, slots=True)
class CseSettings:
    """Client-side keys of a run: how new objects are wrapped, and what opens old ones."""

    target: Keyring | None = field(default=None, repr=False)   # None: the target is server-side
    target_format: CseFormat = CseFormat.V3
    instruction_file: bool = False
    source: Keyring | None = field(default=None, repr=False)   # opens client-side sources
    allow_decrypt: bool = False                                 # client-side -> server-side allowed


@dataclass(frozen=True, slots=True)
class Route:
    """Where objects come from and go to (see `workers.route` for how in place is decided)."""

    source: S3                       # client for the source endpoint
    dest: S3                         # client for the destination endpoint (may be the same object)
    src: Location
    dst: Location
    in_place: bool                   # same bucket and key: the object is replaced by its re-encrypted self
    same_endpoint: bool              # server-side copy possible between src and dst

    @property
    def kind(self) -> RouteKind:
        return RouteKind(in_place=self.in_place, same_endpoint=self.same_endpoint)

    def dest_key(self, key: str) -> str:
        """The destination key of a source key: the source prefix replaced by the destination prefix."""
        if self.in_place:
            return key
        rest = key[len(self.src.prefix):] if key.startswith(self.src.prefix) else key
        return self.dst.prefix + rest


@dataclass(frozen=True, slots=True)
class Policy:
    """What every object must become, and how: target, keys, sizes, verification."""

    target: Encryption               # the server-side encryption every object must end with
    source_sse_c_key: SecretKey | None = field(default=None, repr=False)
    cse: CseSettings | None = None
    part_size: int = 16 * 1024 * 1024
    multipart_threshold: int = 64 * 1024 * 1024
    part_concurrency: int = 8        # parts of one object in flight
    verify: bool = True
    verify_auto: bool = False        # trust copy answers on paths where they matched HeadObject (see core.verify)
    copy_first: bool = False         # bucket to bucket: copy objects the destination lacks before reading them

    @property
    def single_put_max(self) -> int:
        """Streamed objects up to this size are one GET and one PutObject, held in memory whole; larger
        ones are multipart. Bounded by four parts whatever the copy threshold, so memory stays bounded."""
        return min(self.multipart_threshold, 4 * self.part_size)

    @property
    def cse_single_put_max(self) -> int:
        """Client-side objects up to this size are one GET and one PutObject; larger ones stream in parts,
        GETs and uploads overlapping, a few parts of memory each (a whole object held twice, plaintext and
        ciphertext, would also take as much of the read budget as several streams)."""
        return min(self.single_put_max, self.part_size)

    @property
    def decide_target(self) -> Target:
        cse = self.cse
        client_side = cse.target_format if cse is not None and cse.target is not None else None
        return Target(self.target, client_side=client_side,
                      instruction_file=bool(client_side and cse and cse.instruction_file),
                      allow_decrypt=bool(cse and cse.allow_decrypt), multipart_threshold=self.multipart_threshold)


class RunTally:
    """Counts one run keeps across objects (not persisted): copy answers agreeing with HEADs per path
    (verify = "auto"), and copies made before reading the source, tried and refused."""

    __slots__ = ("calibration", "copy_first_refused", "copy_first_tried", "counts")

    def __init__(self) -> None:
        self.calibration: dict[tuple[Mode, Mode], int] = {}
        self.counts: dict[str, int] = {}   # named counters (read-back calibration, copy-first tag checks)
        self.copy_first_tried = 0
        self.copy_first_refused = 0


@dataclass(frozen=True, slots=True)
class Hooks:
    """What the engine lends the workers: memory budgets, journals, the retry policy, capabilities."""

    memory: MemoryBudget | None = None        # bytes of part buffers read and not yet written
    write_memory: MemoryBudget | None = None  # bytes of transformed parts waiting for or in an upload
    buffers: BufferPool = field(default_factory=BufferPool)  # part buffers lent within write_memory, reused
    journal: PartJournal | None = None
    objects: ObjectJournal | None = None
    retry: Retrier | None = None
    caps: CapabilityHook = field(default_factory=LocalCapabilities)
    tally: RunTally = field(default_factory=RunTally)


@dataclass(frozen=True, slots=True)
class Job:
    """Everything needed to re-encrypt objects: the route, the policy and the engine's hooks.

    The properties below read through to the three parts, so the strategies can name what they use."""

    route: Route
    policy: Policy
    hooks: Hooks = field(default_factory=Hooks)

    @classmethod
    def of(cls, *, source: S3, dest: S3, src: Location, dst: Location, in_place: bool, same_endpoint: bool,
           target: Encryption, hooks: Hooks | None = None, **policy: Any) -> Job:
        """A job from its parts named flat (tests and tools)."""
        return cls(Route(source, dest, src, dst, in_place, same_endpoint), Policy(target, **policy),
                   hooks or Hooks())

    @property
    def source(self) -> S3:
        return self.route.source

    @property
    def dest(self) -> S3:
        return self.route.dest

    @property
    def src(self) -> Location:
        return self.route.src

    @property
    def dst(self) -> Location:
        return self.route.dst

    @property
    def in_place(self) -> bool:
        return self.route.in_place

    @property
    def same_endpoint(self) -> bool:
        return self.route.same_endpoint

    @property
    def target(self) -> Encryption:
        return self.policy.target

    @property
    def source_sse_c_key(self) -> SecretKey | None:
        return self.policy.source_sse_c_key

    @property
    def cse(self) -> CseSettings | None:
        return self.policy.cse

    @property
    def part_size(self) -> int:
        return self.policy.part_size

    @property
    def multipart_threshold(self) -> int:
        return self.policy.multipart_threshold

    @property
    def single_put_max(self) -> int:
        return self.policy.single_put_max

    @property
    def part_concurrency(self) -> int:
        return self.policy.part_concurrency

    @property
    def verify(self) -> bool:
        return self.policy.verify

    @property
    def verify_auto(self) -> bool:
        return self.policy.verify_auto

    @property
    def memory(self) -> MemoryBudget | None:
        return self.hooks.memory

    @property
    def write_memory(self) -> MemoryBudget | None:
        return self.hooks.write_memory

    @property
    def buffers(self) -> BufferPool:
        return self.hooks.buffers

    @property
    def journal(self) -> PartJournal | None:
        return self.hooks.journal

    @property
    def retry(self) -> Retrier | None:
        return self.hooks.retry

    @property
    def caps(self) -> CapabilityHook:
        return self.hooks.caps

    @property
    def calibration(self) -> dict[str, int]:
        """Named counters of this run (workers.readback, workers.carry)."""
        return self.hooks.tally.counts

    def dest_key(self, key: str) -> str:
        return self.route.dest_key(key)

    async def retried(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        if self.hooks.retry is None:
            return await fn()
        return await self.hooks.retry(what, fn)

    async def journal_written(self, ref: ObjectRef, etag: str | None) -> None:
        """In place, the ETag of rekey's write of `ref`, recorded at once, before the checks that follow it
        (HeadObject, metadata and tags, read-back; see ObjectJournal.written). A multipart write's is
        journaled with the end of its upload (PartJournal.upload_ended)."""
        objects = self.hooks.objects
        if self.route.in_place and objects is not None and etag:
            await objects.written(ref, etag)


# Retries of the object being processed (the engine's retrier counts into it; the core reads it into the
# outcome). A context variable, so parts of one object counted from their own tasks add up.
object_retries: ContextVar[list[int] | None] = ContextVar("object_retries", default=None)


def count_retry() -> None:
    counter = object_retries.get()
    if counter is not None:
        counter[0] += 1
