"""Typed records shared by the engine and the workers: modes, keys, encryption specs, object refs, outcomes."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Mode(StrEnum):
    """How an object is encrypted; the names are the config's `[target] mode` values (`none` = plaintext)."""

    NONE = "none"
    SSE_S3 = "sse-s3"
    SSE_KMS = "sse-kms"
    DSSE_KMS = "dsse-kms"
    SSE_C = "sse-c"
    CSE = "cse"


class Action(StrEnum):
    """What happens to one object; stored verbatim in the checkpoint and the report."""

    SKIP = "skip"            # already in the target state: no write
    COPY = "copy"            # CopyObject
    MULTIPART_COPY = "multipart-copy"  # UploadPartCopy in parallel parts
    STREAM = "stream"        # ranged GETs + (transform) + PutObject/multipart upload
    REWRAP = "rewrap"        # client-side: new wrapping of the data key only
    REFUSE = "refuse"        # will not be done (reason given), e.g. CSE decrypt not allowed
    UPDATE = "update"        # UpdateObjectEncryption: the server changed the KMS key in place, no data copied
    RECREATE = "recreate"    # versioned: re-created re-encrypted as a new version on top; the old one kept
    RECREATE_DELETE = "recreate-delete"  # versioned: re-created on top, then the old version deleted


class State(StrEnum):
    """Lifecycle of one object in the checkpoint."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    DONE = "done"            # written and verified
    SKIPPED = "skipped"      # already right, or refused with a reason
    FAILED = "failed"        # per-object error; retried by the next run
    CHANGED = "changed"      # changed or deleted by someone else mid-run; picked up by the next run


@dataclass(frozen=True, slots=True)
class SecretKey:
    """A 32-byte AES key (SSE-C customer key or raw wrapping key). Never printed: repr shows its MD5 only."""

    raw: bytes = field(repr=False)
    source: str = ""  # where it came from (a file path), for messages

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ValueError(f"{self.source or 'key'}: must be 32 bytes, got {len(self.raw)}")

    @property
    def b64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    @property
    def md5_b64(self) -> str:
        """The SSE-C key MD5 header value: base64 of the MD5 of the raw key. Safe to log and store."""
        return base64.b64encode(hashlib.md5(self.raw).digest()).decode("ascii")

    def __repr__(self) -> str:
        return f"SecretKey(source={self.source!r}, md5={self.md5_b64})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Encryption:
    """Server-side encryption wanted by a request, or observed on an object.

    For SSE-C, `sse_c_key` is set on a wanted spec; an observed one has only `sse_c_key_md5`.
    """

    mode: Mode
    kms_key_id: str | None = None
    bucket_key: bool | None = None
    context: Mapping[str, str] | None = None
    sse_c_key: SecretKey | None = field(default=None, repr=False)
    sse_c_key_md5: str | None = None

    @property
    def key_md5(self) -> str | None:
        if self.sse_c_key is not None:
            return self.sse_c_key.md5_b64
        return self.sse_c_key_md5


@dataclass(frozen=True, slots=True)
class Location:
    """Where objects live: one bucket on one endpoint, with a key prefix."""

    bucket: str
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One object as listed: enough to plan it and to guard the copy with If-Match."""

    key: str
    size: int
    etag: str
    version_id: str | None = None
    last_modified: float | None = None
    is_latest: bool = True              # False for a noncurrent version (ListObjectVersions, inventory)
    listed_mode: Mode | None = None     # encryption as the listing says (S3 Inventory EncryptionStatus)
    dest_listed: bool = False           # the destination listing was consulted for this key
    dest_size: int | None = None        # size of the destination object it showed (None: none there)
    storage_class: str | None = None    # as ListObjectsV2 shows it (None: not listed, or STANDARD)
    paired: bool | None = None          # the listing showed `<key>.instruction` (None: not known)


@dataclass(frozen=True, slots=True)
class ObjectHead:
    """What HeadObject says about an object: encryption, size and everything a copy must carry over."""

    key: str
    size: int
    etag: str
    encryption: Encryption
    version_id: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    content_disposition: str | None = None
    content_language: str | None = None
    cache_control: str | None = None
    expires: str | None = None
    website_redirect: str | None = None
    storage_class: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    parts_count: int | None = None
    tag_count: int | None = None
    last_modified: float | None = None


@dataclass(frozen=True, slots=True)
class PartResult:
    """One finished part of a multipart upload."""

    part_number: int
    etag: str
    size: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one object; the engine records it and reports it."""

    key: str
    state: State
    action: Action | None       # None: nothing was decided (the object could not be read)
    source_mode: Mode | None
    target_mode: Mode | None
    bytes_copied: int = 0       # bytes the server copied (server-side)
    bytes_through_client: int = 0  # bytes read and written by rekey itself (streamed)
    new_etag: str | None = None
    version_id: str | None = None
    error: str | None = None
    error_kind: str | None = None
    retries: int = 0
    plaintext_sha256: str | None = None
    new_version_id: str | None = None   # versioned buckets: the version the re-encrypted copy became
    size: int | None = None             # the object's size as read (None: as listed)
    etag: str | None = None             # the object's ETag as read (None: as listed)


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Keys after `lo` up to and including `hi` (None: to the end), listed after `position` in this pass."""

    lo: str
    hi: str | None
    position: str
    done: bool = False

    def holds(self, key: str) -> bool:
        return key > self.lo and (self.hi is None or key <= self.hi)


@dataclass(frozen=True, slots=True)
class PendingEnvelope:
    """An instruction file rekey meant to write after the data of `dest_key` replaced the object `old_etag`."""

    dest_key: str
    old_etag: str
    instruction: Mapping[str, str]
