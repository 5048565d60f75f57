"""What a worker is given to process objects: clients, target, limits, and the engine's hooks.

The hooks (`PartJournal`, `Capabilities`) are protocols implemented by the engine, so a worker can
checkpoint parts without importing the engine. Retries are not a worker's business: the S3 boundary
sends each request again under the engine's policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from workers.cse import CseFormat, Keyring
from workers.memory import MemoryBudget
from workers.model import Encryption, Location, ObjectRef, PartResult, SecretKey
from workers.s3 import S3


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

    async def upload_ended(self, ref: ObjectRef, upload_id: str) -> None: ...

    async def resume_point(self, ref: ObjectRef) -> UploadResume | None: ...


class Capabilities(Protocol):
    """What an endpoint can do, learned from its answers or a probe, remembered across runs."""

    def get(self, name: str) -> bool | None: ...

    async def learn(self, name: str, value: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class CseSettings:
    """Client-side keys of a run: how new objects are wrapped, and what opens old ones."""

    target: Keyring | None = field(default=None, repr=False)   # None: the target is server-side
    target_format: CseFormat = CseFormat.V3
    instruction_file: bool = False
    source: Keyring | None = field(default=None, repr=False)   # opens client-side sources
    allow_decrypt: bool = False                                 # client-side -> server-side allowed


@dataclass(frozen=True, slots=True)
class Job:
    """Everything needed to re-encrypt objects from one location to another."""

    source: S3                       # client for the source endpoint
    dest: S3                         # client for the destination endpoint (may be the same object)
    src: Location
    dst: Location
    in_place: bool                   # same bucket and key: the object is replaced by its re-encrypted self
    same_endpoint: bool              # server-side copy possible between src and dst
    target: Encryption               # the server-side encryption every object must end with
    source_sse_c_key: SecretKey | None = field(default=None, repr=False)
    part_size: int = 16 * 1024 * 1024
    multipart_threshold: int = 64 * 1024 * 1024

    @property
    def single_put_max(self) -> int:
        """Streamed objects up to this size are one GET and one PutObject, held in memory whole; larger
        ones are multipart. Bounded by four parts whatever the copy threshold, so memory stays bounded."""
        return min(self.multipart_threshold, 4 * self.part_size)
    part_concurrency: int = 8        # parts of one object in flight
    verify: bool = True
    verify_auto: bool = False        # trust copy answers on paths where they matched HeadObject (see migrate)
    calibration: dict[str, int] = field(default_factory=dict)  # verify_auto: agreements seen per path
    memory: MemoryBudget | None = None   # bytes of part buffers read and not yet written
    write_memory: MemoryBudget | None = None  # bytes of transformed parts waiting for or in an upload
    journal: PartJournal | None = None
    caps: Capabilities | None = None
    cse: CseSettings | None = None
    copy_first: bool = False         # bucket to bucket: copy objects the destination lacks before reading them
    copy_first_tally: list[int] = field(default_factory=lambda: [0, 0])  # copy_first: [tried, refused]

    def dest_key(self, key: str) -> str:
        """The destination key of a source key: the source prefix replaced by the destination prefix."""
        if self.in_place:
            return key
        rest = key[len(self.src.prefix):] if key.startswith(self.src.prefix) else key
        return self.dst.prefix + rest
